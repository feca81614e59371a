"""Natural-language captions of world people and scenes, in varied wording.

Every phrase is true of the picture: hair colour and background names come from the same
named colours the renderer jitters, actions from the motion that drove the clip.
"""

from __future__ import annotations

import random
import re

from .traits import Identity, Scene

ACTION_WORDS = {
    "speaking": ["speaking", "talking", "talking to the camera", "saying something"],
    "silent": ["silent", "quiet", "not speaking", "keeping quiet"],
    "turning": ["turning their head", "looking around", "turning to the side"],
    "nodding": ["nodding", "nodding their head"],
}
EXPRESSION_WORDS = {
    "smiling": ["smiling", "with a smile"],
    "surprised": ["looking surprised", "with a surprised face"],
    "neutral": [""],
}


def with_article(phrase: str) -> str:
    """'a' or 'an' before a phrase, by its first letter (good enough for these captions)."""
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def hair_phrase(ident: Identity, rng: random.Random) -> str:
    c, s = ident.hair_name, ident.hair_style
    if s == "bald":
        return "bald" if rng.random() < 0.5 else f"bald with a little {c} hair"
    if s == "buzz cut":
        return with_article(f"{c} buzz cut")
    if s == "ponytail":
        return f"{c} hair in a ponytail"
    if s == "spiky":
        return f"spiky {c} hair"
    if s == "bob":
        return with_article(f"{c} bob")
    return f"{s} {c} hair"


def person_phrase(
    ident: Identity, rng: random.Random, *, hat: str = "none", hat_name: str = ""
) -> str:
    """'a man with short red hair and round glasses' with a random subset of the traits
    (hair always, glasses whenever worn, so prompts that state them are learnt reliably)."""
    noun = (
        ident.gender
        if rng.random() < 0.8
        else ("person" if rng.random() < 0.5 else ("guy" if ident.gender == "man" else "lady"))
    )
    parts = []
    hp = hair_phrase(ident, rng)
    if ident.hair_style == "bald":
        noun = f"bald {noun}" if hp == "bald" else noun
        if hp != "bald":
            parts.append(hp.replace("bald with ", ""))
    else:
        parts.append(hp)
    if ident.glasses != "none":
        parts.append(f"{ident.glasses} glasses")
    elif rng.random() < 0.25:
        parts.append("no glasses")
    if ident.facial_hair != "none" and rng.random() < 0.8:
        parts.append(
            "stubble" if ident.facial_hair == "stubble" else with_article(ident.facial_hair)
        )
    if rng.random() < 0.3:
        parts.append(f"{ident.eye_name} eyes")
    if rng.random() < 0.3:
        parts.append(f"{ident.skin_name} skin")
    if ident.freckles and rng.random() < 0.6:
        parts.append("freckles")
    if ident.mole is not None and rng.random() < 0.4:
        parts.append("a mole")
    if ident.scar and rng.random() < 0.5:
        parts.append("a scar on the cheek")
    if hat != "none" and rng.random() < 0.85:
        parts.append(with_article(f"{hat_name} {hat}"))
    text = with_article(noun)
    if parts:
        text += " with " + (
            ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]
        )
    return text


def background_phrase(scene: Scene, rng: random.Random) -> str:
    c, p = scene.background_name, scene.background_pattern
    if p == "room":
        return rng.choice([f"in a room with {c} walls", f"in {with_article(c + ' room')}"])
    pat = {"plain": "", "striped": "striped ", "dotted": "dotted ", "checked": "checked "}[p]
    return rng.choice(
        [
            f"in front of {with_article(f'{c} {pat}wall')}",
            f"against {with_article(f'{c} {pat}background')}",
            f"on {with_article(f'{c} {pat}backdrop')}",
        ]
    ).replace("  ", " ")


def scene_phrases(
    scene: Scene, rng: random.Random, *, with_clothes: bool = True, every_shirt: bool = False
) -> list[str]:
    out = [rng.choice(ACTION_WORDS[scene.action])]
    expr = rng.choice(EXPRESSION_WORDS[scene.expression])
    if expr:
        out.append(expr)
    if with_clothes and (rng.random() < 0.45 or every_shirt):
        pat = "" if scene.clothing_pattern == "plain" else scene.clothing_pattern + " "
        out.append(f"wearing {with_article(f'{scene.clothing_name} {pat}shirt')}")
    return out


def caption_single(
    ident: Identity,
    scene: Scene,
    rng: random.Random,
    *,
    name: str | None = None,
    still: bool = False,
    every_scene_trait: bool = False,
) -> str:
    """Caption of one person; a named (famous) person is called by name, never described.
    ``every_scene_trait`` names the hat and the shirt every time (for LoRA photos: what the
    caption leaves out is learnt as part of the person), not some of the time as pretraining
    captions do."""
    if name is not None:
        who = name
        # rng is drawn first either way, so pretraining captions stay what they were
        if scene.hat != "none" and (rng.random() < 0.6 or every_scene_trait):
            who += f" in {with_article(f'{scene.hat_name} {scene.hat}')}"
    else:
        who = person_phrase(ident, rng, hat=scene.hat, hat_name=scene.hat_name)
    bits = scene_phrases(scene, rng, every_shirt=every_scene_trait)
    if still and scene.action in ("turning", "nodding"):
        bits = bits[1:]
    prefix = (
        rng.choice(["", "", "a photo of ", "a video of ", "close-up of "])
        if not still
        else rng.choice(["", "a photo of ", "portrait of "])
    )
    text = f"{prefix}{who}, " + ", ".join(bits) + ", " + background_phrase(scene, rng)
    return text.replace(", ,", ",").strip(", ")


def caption_pair(
    left: tuple[Identity, Scene, str | None],
    right: tuple[Identity, Scene, str | None],
    background: Scene,
    rng: random.Random,
) -> str:
    """Caption of a two-person scene: who stands left, who right, and what each does."""

    def who(ident, scene, name):
        base = (
            name
            if name is not None
            else person_phrase(ident, rng, hat=scene.hat, hat_name=scene.hat_name)
        )
        return f"{base} {rng.choice(ACTION_WORDS[scene.action])}"

    return (
        f"two people side by side {background_phrase(background, rng)}: "
        f"on the left {who(*left)}, on the right {who(*right)}"
    )


def full_description(ident: Identity) -> str:
    """The most complete text description of a person the captions can give: what a user
    would write to get the base model to draw them without a LoRA."""

    class _All(random.Random):  # every optional trait is mentioned, the plain noun is used
        def random(self):
            return 0.0

        def choice(self, seq):
            return seq[0]

    return person_phrase(ident, _All())


def split_pair_caption(prompt: str) -> tuple[str, str, str] | None:
    """'two people in front of a red wall: on the left mike speaking, on the right anna silent'
    -> ('mike speaking', 'anna silent', 'in front of a red wall'): each side's words and the
    shared scene, without the words that ask for two people. The one parser of two-person
    prompts, for generation (one prompt per region) and for measurement (what each region was
    asked for). None unless each of 'on the left' / 'on the right' opens its clause, as
    ``caption_pair`` writes them: in 'A on the right and B on the left' a side's words come
    before it."""
    low = prompt.lower()
    i, j = low.find("on the left"), low.find("on the right")
    if i < 0 or j < 0:
        return None
    first, second = sorted([("left", i), ("right", j)], key=lambda t: t[1])
    if not re.search(r"(^|[:,;])\s*$", prompt[: first[1]]) or not re.search(
        r"[,;]\s*(and\s*)?$|\band\s*$", prompt[: second[1]]
    ):
        return None
    texts = {
        first[0]: prompt[first[1] + len("on the " + first[0]) : second[1]],
        second[0]: prompt[second[1] + len("on the " + second[0]) :],
    }
    words = {
        side: re.sub(r"(?i)^[\s,:;]*(is\s+)?|[\s,;.]*(and)?[\s,;.]*$", "", text)
        for side, text in texts.items()
    }
    if not words["left"] or not words["right"]:
        return None
    scene = prompt[: min(i, j)]
    scene = re.sub(r"(?i)\b(two people|a pair of people|two persons)\b( side by side)?", "", scene)
    return words["left"], words["right"], scene.strip(" ,:;.")
