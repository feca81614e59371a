"""Identity, scene and motion specs of the procedural world.

An *identity* is everything that makes a person themselves (face geometry, colouring, hair,
marks); a *scene* is everything that varies between photos of the same person (background,
light, clothes, camera, pose, expression, action). Both are plain JSON-serialisable dataclasses
sampled from a seeded ``random.Random``, so a seed fully determines them.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass, field
from typing import Any

RGB = tuple[float, float, float]

# Named colours: the caption uses the name, the renderer a jittered shade of it, so the name is
# always true of the picture while two people with "red hair" still differ.
HAIR_COLOURS: dict[str, RGB] = {
    "black": (0.08, 0.07, 0.07),
    "brown": (0.36, 0.22, 0.12),
    "blonde": (0.88, 0.74, 0.42),
    "red": (0.70, 0.24, 0.10),
    "grey": (0.60, 0.60, 0.60),
    "white": (0.93, 0.93, 0.90),
    "blue": (0.15, 0.35, 0.85),
    "pink": (0.92, 0.45, 0.65),
}
SKIN_TONES: dict[str, RGB] = {
    "pale": (0.96, 0.84, 0.76),
    "light": (0.91, 0.74, 0.62),
    "olive": (0.78, 0.62, 0.45),
    "brown": (0.58, 0.40, 0.27),
    "dark": (0.36, 0.23, 0.15),
}
EYE_COLOURS: dict[str, RGB] = {
    "blue": (0.20, 0.45, 0.85),
    "green": (0.20, 0.60, 0.30),
    "brown": (0.35, 0.20, 0.08),
    "grey": (0.55, 0.58, 0.62),
}
SCENE_COLOURS: dict[str, RGB] = {
    "green": (0.25, 0.65, 0.30),
    "blue": (0.22, 0.42, 0.85),
    "red": (0.80, 0.20, 0.18),
    "yellow": (0.92, 0.82, 0.25),
    "purple": (0.52, 0.30, 0.70),
    "orange": (0.95, 0.55, 0.15),
    "white": (0.92, 0.92, 0.92),
    "grey": (0.50, 0.50, 0.52),
    "pink": (0.95, 0.62, 0.75),
    "teal": (0.15, 0.58, 0.58),
    "black": (0.10, 0.10, 0.11),
}
# Background colours leave out black: a black wall swallows black hair and the silhouette.
BACKGROUND_COLOURS = [c for c in SCENE_COLOURS if c != "black"]

HAIR_STYLES = ["short", "long", "curly", "bald", "bob", "ponytail", "buzz cut", "spiky"]
FACIAL_HAIR = ["none", "beard", "moustache", "goatee", "stubble"]
GLASSES = ["none", "round", "square"]
BACKGROUND_PATTERNS = ["plain", "striped", "dotted", "checked", "room"]
CLOTHING_PATTERNS = ["plain", "striped", "dotted"]
HATS = ["none", "cap", "beanie", "top hat"]
EXPRESSIONS = ["neutral", "smiling", "surprised"]
ACTIONS = ["speaking", "silent", "turning", "nodding"]


def _jitter(rng: random.Random, rgb: RGB, amount: float) -> RGB:
    return tuple(min(1.0, max(0.0, c + rng.uniform(-amount, amount))) for c in rgb)  # type: ignore[return-value]


def _pick(rng: random.Random, options: list[str], weights: list[float] | None = None) -> str:
    return rng.choices(options, weights=weights, k=1)[0]


@dataclass(frozen=True)
class Identity:
    """The traits that make a person recognisable, all in face-relative units."""

    gender: str  # "man" | "woman"
    skin_name: str
    skin: RGB
    face_width: float  # multiplies the face ellipse's x radius
    face_length: float  # multiplies its y radius
    jaw: float  # superellipse exponent of the lower face: 2 round ... 3.5 square
    chin: float  # chin drop, 0 ... 0.1 of the face height
    eye_size: float
    eye_shape: float  # eye height / width
    eye_spacing: float
    eye_height: float  # eye line, relative to the face centre (negative is up)
    eye_name: str
    eye: RGB
    brow_thickness: float
    brow_tilt: float
    nose_length: float
    nose_width: float
    mouth_width: float
    lip_thickness: float
    lip: RGB
    ear_size: float
    hair_style: str
    hair_name: str
    hair: RGB
    hairline: float  # how low the hair comes on the forehead
    facial_hair: str
    glasses: str
    glasses_colour: RGB
    mole: tuple[float, float] | None  # face coords of a mole, or none
    scar: bool
    freckles: bool

    @staticmethod
    def sample(rng: random.Random) -> Identity:
        """Draw a person. Categorical traits carry the caption words; the rest is continuous."""
        gender = _pick(rng, ["man", "woman"])
        skin_name = _pick(rng, list(SKIN_TONES))
        hair_name = _pick(rng, list(HAIR_COLOURS), [5, 5, 4, 3, 2, 1, 0.7, 0.7])
        style_weights = (
            [5, 1, 2, 2, 0.5, 0.5, 2, 1.5] if gender == "man" else [2, 5, 2, 0.3, 3, 3, 0.5, 0.7]
        )
        hair_style = _pick(rng, HAIR_STYLES, style_weights)
        facial_hair = _pick(rng, FACIAL_HAIR, [5, 2, 1.5, 1.2, 1.5]) if gender == "man" else "none"
        glasses = _pick(rng, GLASSES, [6, 2, 2])
        eye_name = _pick(rng, list(EYE_COLOURS))
        lip_base = (0.75, 0.38, 0.38) if gender == "woman" else (0.66, 0.40, 0.36)
        return Identity(
            gender=gender,
            skin_name=skin_name,
            skin=_jitter(rng, SKIN_TONES[skin_name], 0.04),
            face_width=rng.uniform(0.82, 1.18),
            face_length=rng.uniform(0.88, 1.12),
            jaw=rng.uniform(2.0, 3.6),
            chin=rng.uniform(0.0, 0.1),
            eye_size=rng.uniform(0.8, 1.25),
            eye_shape=rng.uniform(0.45, 0.85),
            eye_spacing=rng.uniform(0.82, 1.18),
            eye_height=rng.uniform(-0.22, -0.08),
            eye_name=eye_name,
            eye=_jitter(rng, EYE_COLOURS[eye_name], 0.05),
            brow_thickness=rng.uniform(0.6, 1.6),
            brow_tilt=rng.uniform(-0.25, 0.25),
            nose_length=rng.uniform(0.75, 1.3),
            nose_width=rng.uniform(0.75, 1.35),
            mouth_width=rng.uniform(0.75, 1.3),
            lip_thickness=rng.uniform(0.7, 1.4),
            lip=_jitter(rng, lip_base, 0.06),
            ear_size=rng.uniform(0.75, 1.3),
            hair_style=hair_style,
            hair_name=hair_name,
            hair=_jitter(rng, HAIR_COLOURS[hair_name], 0.05),
            hairline=rng.uniform(-0.1, 0.12),
            facial_hair=facial_hair,
            glasses=glasses,
            glasses_colour=_jitter(rng, _pick_colour(rng, ["black", "red", "blue", "grey"]), 0.05),
            mole=(rng.uniform(-0.5, 0.5), rng.uniform(-0.1, 0.45)) if rng.random() < 0.25 else None,
            scar=rng.random() < 0.12,
            freckles=rng.random() < 0.2,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Identity:
        d = dict(d)
        for k in ("skin", "eye", "lip", "hair", "glasses_colour"):
            d[k] = tuple(d[k])
        if d.get("mole") is not None:
            d["mole"] = tuple(d["mole"])
        return Identity(**d)


def _pick_colour(rng: random.Random, names: list[str]) -> RGB:
    return SCENE_COLOURS[_pick(rng, names)]


@dataclass(frozen=True)
class Scene:
    """What changes between two photos of the same person."""

    background_name: str
    background: RGB
    background_pattern: str
    brightness: float
    light_direction: float  # -1 light from the left ... 1 from the right
    warmth: float  # -1 cool ... 1 warm
    clothing_name: str
    clothing: RGB
    clothing_pattern: str
    hat: str
    hat_name: str
    hat_colour: RGB
    zoom: float
    offset: tuple[float, float]
    yaw: float  # radians, head turned to its left is negative
    pitch: float
    roll: float
    expression: str
    action: str

    @staticmethod
    def sample(rng: random.Random, allow_hat: bool = True) -> Scene:
        bg = _pick(rng, BACKGROUND_COLOURS)
        clothing = _pick(rng, list(SCENE_COLOURS))
        hat_name = _pick(rng, list(SCENE_COLOURS))
        return Scene(
            background_name=bg,
            background=_jitter(rng, SCENE_COLOURS[bg], 0.04),
            background_pattern=_pick(rng, BACKGROUND_PATTERNS, [5, 1.5, 1, 1, 1.5]),
            brightness=rng.uniform(0.85, 1.12),
            light_direction=rng.uniform(-1, 1),
            warmth=rng.uniform(-1, 1),
            clothing_name=clothing,
            clothing=_jitter(rng, SCENE_COLOURS[clothing], 0.05),
            clothing_pattern=_pick(rng, CLOTHING_PATTERNS, [4, 1, 1]),
            hat=_pick(rng, HATS, [8, 1, 1, 0.6]) if allow_hat else "none",
            hat_name=hat_name,
            hat_colour=_jitter(rng, SCENE_COLOURS[hat_name], 0.04),
            zoom=rng.uniform(0.88, 1.12),
            offset=(rng.uniform(-0.08, 0.08), rng.uniform(-0.06, 0.06)),
            yaw=rng.uniform(-0.45, 0.45),
            pitch=rng.uniform(-0.2, 0.2),
            roll=rng.uniform(-0.15, 0.15),
            expression=_pick(rng, EXPRESSIONS, [4, 3, 1]),
            action=_pick(rng, ACTIONS, [4, 3, 1, 1]),
        )

    def replace(self, **changes: Any) -> Scene:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Scene:
        d = dict(d)
        for k in ("background", "clothing", "hat_colour", "offset"):
            d[k] = tuple(d[k])
        return Scene(**d)


@dataclass(frozen=True)
class Motion:
    """Per-frame pose and face state of one person in a clip (lists of length ``frames``)."""

    mouth_open: list[float]
    eye_open: list[float]
    yaw: list[float]
    pitch: list[float]
    roll: list[float]
    dx: list[float] = field(default_factory=list)  # camera drift, canvas units
    dy: list[float] = field(default_factory=list)

    @staticmethod
    def sample(rng: random.Random, scene: Scene, frames: int, fps: float = 8.0) -> Motion:
        """Speech opens and closes the mouth at a syllable rhythm (about 3-5 per second);
        people blink every few seconds; turning and nodding move the head smoothly."""
        t = [i / fps for i in range(frames)]
        if scene.action == "speaking":
            # Syllables: a sequence of open-close cycles with varied length and loudness.
            mouth, phase, syll = [], rng.uniform(0, 1), []
            while len(syll) < frames + 4:
                length = rng.randint(2, 3)
                peak = rng.uniform(0.55, 1.0)
                syll += [peak * math.sin(math.pi * (k + 0.5) / length) for k in range(length)]
            start = int(phase * 2)
            mouth = [max(0.0, syll[start + i]) for i in range(frames)]
        else:
            mouth = [0.0] * frames
        eye = [1.0] * frames
        blink_at = rng.randint(-8, frames + 8)
        for i in range(frames):
            if abs(i - blink_at) == 0:
                eye[i] = 0.05
            elif abs(i - blink_at) == 1:
                eye[i] = 0.45
        yaw = [scene.yaw] * frames
        pitch = [scene.pitch] * frames
        if scene.action == "turning":
            target = -math.copysign(rng.uniform(0.35, 0.6), scene.yaw or 1.0)
            yaw = [
                scene.yaw + (target - scene.yaw) * _smoothstep(i / max(1, frames - 1))
                for i in range(frames)
            ]
        elif scene.action == "nodding":
            freq = rng.uniform(0.8, 1.3)
            pitch = [scene.pitch + 0.22 * math.sin(2 * math.pi * freq * ti) for ti in t]
        drift = (rng.uniform(-0.04, 0.04), rng.uniform(-0.03, 0.03))
        span = max(1, frames - 1)
        return Motion(
            mouth_open=mouth,
            eye_open=eye,
            yaw=yaw,
            pitch=pitch,
            roll=[scene.roll] * frames,
            dx=[drift[0] * i / span for i in range(frames)],
            dy=[drift[1] * i / span for i in range(frames)],
        )

    @staticmethod
    def still(scene: Scene) -> Motion:
        """A single photo: the scene's pose, eyes open, mouth per the action."""
        mouth = 0.5 if scene.action == "speaking" else 0.0
        return Motion([mouth], [1.0], [scene.yaw], [scene.pitch], [scene.roll], [0.0], [0.0])


def _smoothstep(x: float) -> float:
    return x * x * (3 - 2 * x)
