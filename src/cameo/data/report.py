"""The photo check's report: per file, used or skipped (why), its size, faces, subject, crop,
bucket and warnings; per folder, how many are usable and what to add. Written by ``cameo
photos``, beside every LoRA by ``cameo train`` (photo_report.txt/.json), shown by the web app.

Coordinates are pixels of the upright photo at full resolution (EXIF rotation applied):
boxes are ``[left, top, right, bottom]`` with right and bottom exclusive; sizes and buckets
are ``[width, height]``.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .buckets import Bucket, Target

GOOD_PHOTOS = 20  # about this many varied, clean photos make a good LoRA
MIN_FACE_FRACTION = 1 / 8  # the face at least this share of the bucket's shorter side
# Warnings about the picture itself (captions are fixed without new photos).
PHOTO_PROBLEMS = (
    "no_face",
    "others_in_crop",
    "face_small",
    "blurry",
    "underexposed",
    "overexposed",
    "near_duplicate",
    "other_person",
)

IntBox = tuple[int, int, int, int]


@dataclass
class PhotoWarning:
    """One problem found in one file: a stable code and a sentence for the user."""

    code: str  # one of PHOTO_PROBLEMS, "several_faces", "caption_missing", "caption_look"
    message: str


@dataclass
class PhotoEntry:
    """What the check found in one file."""

    file: str
    kind: str = "photo"  # "photo", "clip" or "other"
    used: bool = False
    reason: str = ""  # why it was skipped
    size: tuple[int, int] | None = None  # (width, height), upright, full resolution
    decoded: str = ""  # how it was reduced while decoding ("draft 1/4", "reduce 2")
    faces: list[IntBox] = field(default_factory=list)  # largest first
    face_scores: list[float] = field(default_factory=list)
    subject: int | None = None  # index into faces
    crop: IntBox | None = None
    bucket: tuple[int, int] | None = None  # (width, height) it trains at
    upscale: float | None = None  # crop -> bucket factor (> 1 enlarged)
    windows: int = 0  # clips: training windows taken
    frames: int = 0  # frames per training item
    caption: str = ""  # as trained (trigger applied)
    identity_distance: float | None = None  # to the other photos' subject (descriptor)
    sharpness: float | None = None  # variance of the Laplacian on the face (or centre)
    brightness: float | None = None  # mean grey level of the face (or centre), 0-255
    warnings: list[PhotoWarning] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def warn(self, code: str, message: str) -> None:
        self.warnings.append(PhotoWarning(code, message))

    @property
    def codes(self) -> list[str]:
        return [w.code for w in self.warnings]

    @property
    def clean(self) -> bool:
        """Used, and no warning about the picture itself."""
        return self.used and not set(self.codes) & set(PHOTO_PROBLEMS)

    def line(self) -> str:
        """One line for the text report, without the warnings."""
        if not self.used:
            return f"{self.file}: skipped: {self.reason}"
        parts = [f"{self.size[0]}x{self.size[1]}"] if self.size else []
        if self.kind == "clip":
            parts.append(
                f"{self.windows} window{'s' * (self.windows != 1)} of {self.frames} frames"
            )
        if self.faces:
            n = len(self.faces)
            who = f", subject #{self.subject + 1}" if n > 1 and self.subject is not None else ""
            parts.append(f"{n} face{'s' * (n > 1)}{who}")
            parts.append("face [{}, {}, {}, {}]".format(*self.faces[self.subject or 0]))
        if self.crop is not None and self.bucket is not None:
            parts.append("crop [{}, {}, {}, {}] -> {}x{}".format(*self.crop, *self.bucket))
        return f"{self.file}: used, " + ", ".join(parts)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["faces"] = [
            {"box": list(b), "score": round(s, 3), "subject": i == self.subject}
            for i, (b, s) in enumerate(zip(self.faces, self.face_scores, strict=True))
        ]
        del d["face_scores"]
        for k in ("identity_distance", "sharpness", "brightness", "upscale"):
            if d[k] is not None:
                d[k] = round(d[k], 3)
        return d


@dataclass
class PhotoReport:
    """The photo check of one folder for one base."""

    folder: str
    target: Target
    buckets: list[Bucket]
    min_photos: int
    faces_checked: bool
    entries: list[PhotoEntry] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # about the whole folder

    @property
    def usable(self) -> int:
        """Files that give training items (photos and clips)."""
        return sum(e.used for e in self.entries)

    @property
    def enough(self) -> bool:
        return self.usable >= self.min_photos

    def count(self, code: str) -> int:
        return sum(code in e.codes for e in self.entries if e.used)

    def summary(self) -> list[str]:
        """What the folder amounts to and what to add, a sentence a line."""
        used = [e for e in self.entries if e.used]
        clean = sum(e.clean for e in used)
        t = self.target
        lines = [
            f"{len(used)} of {len(self.entries)} files usable ({clean} without warnings); "
            f"training needs at least {self.min_photos}"
            + ("." if self.enough else f": add {self.min_photos - len(used)} more.")
        ]
        face_px = round(min(t.height, t.width) * MIN_FACE_FRACTION)
        if clean < GOOD_PHOTOS:
            lines.append(
                f"Add {GOOD_PHOTOS - clean} more photos: sharp, well-lit close-ups or "
                f"head-and-shoulders shots of the person alone, the face at least 1/8 of the "
                f"picture's shorter side (at least {face_px} px once trained at "
                f"{t.width}x{t.height}), with varied expressions, angles, clothes, places and "
                "light."
            )
        advice = (  # (code, label, what to do)
            ("blurry", "blurry", "replace with sharp photos"),
            ("other_person", "maybe someone else", "check them and remove any that are"),
            ("others_in_crop", "other people in the crop", "crop them out or remove the photos"),
            ("no_face", "no face found", "the LoRA learns little from these"),
            ("face_small", "face too small", "use closer shots"),
            ("near_duplicate", "near duplicates", "vary pose, place and light instead"),
            ("underexposed", "under-exposed", "use photos in better light"),
            ("overexposed", "over-exposed", "use photos in softer light"),
            (
                "caption_look",
                "captions describing the person's look",
                "describe what changes "
                "(pose, expression, clothes, place, light); the trigger carries the look",
            ),
            ("caption_missing", "no caption", "'a photo of [trigger]' is used"),
        )
        counts = Counter(c for e in used for c in set(e.codes))
        lines += [f"{label} ({counts[c]}): {todo}." for c, label, todo in advice if counts[c]]
        return lines

    def format(self) -> str:
        t = self.target
        head = (
            f"photo check of {self.folder} for {t.width}x{t.height} training "
            f"({t.frames} frames at {t.fps:g} fps; buckets "
            + " ".join(str(b) for b in self.buckets)
            + f"; crops enlarged at most {t.max_upscale:g}x)"
        )
        body = [head, *(f"  note: {n}" for n in self.notes)]
        for e in self.entries:
            body.append("  " + e.line())
            body.extend(f"      {w.code}: {w.message}" for w in e.warnings)
        body.append("summary:")
        body.extend(f"  {s}" for s in self.summary())
        return "\n".join(body)

    def to_dict(self) -> dict:
        t = self.target
        return {
            "folder": self.folder,
            "base": {
                "height": t.height,
                "width": t.width,
                "frames": t.frames,
                "fps": t.fps,
                "max_upscale": t.max_upscale,
            },
            "buckets": [[b.width, b.height] for b in self.buckets],
            "coordinates": "pixels of the upright photo; boxes [left, top, right, bottom], "
            "right/bottom exclusive; sizes and buckets [width, height]",
            "usable": self.usable,
            "min_photos": self.min_photos,
            "enough": self.enough,
            "faces_checked": self.faces_checked,
            "notes": list(self.notes),
            "summary": self.summary(),
            "photos": [e.to_dict() for e in self.entries],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1) + "\n"

    def write(self, folder: Path) -> list[Path]:
        """``photo_report.txt`` and ``photo_report.json`` in ``folder``."""
        txt, js = Path(folder) / "photo_report.txt", Path(folder) / "photo_report.json"
        txt.write_text(self.format() + "\n")
        js.write_text(self.to_json())
        return [txt, js]
