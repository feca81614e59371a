"""The face judge: a real person's identity in clips, by dlib's face descriptor (cameo.faces).

Every frame is judged at its own resolution: the largest face is detected, aligned by five
landmarks and described (128-d), then compared with the centroid of the reference photos'
descriptors (:mod:`cameo.faces.judge`). Per clip:

- ``face_found``: share of frames in which the detector finds a face;
- ``distance``: mean distance of those faces to the references' centroid;
- ``same_person``: share of all frames whose face is nearer than dlib's same-person distance
  (0.6);
- ``similarity``: mean ``1 - distance``; ``similarity_normalised``: that over the references'
  own leave-one-out similarity (1.0 = as alike as the person's photos are to each other);
- ``identity_normalised``: ``similarity_normalised`` times ``face_found`` -- frames without a
  face count as 0, so a LoRA that loses the face cannot win; the score best checkpoints are
  chosen by (``similarity`` stands in for the normalised value with a single reference);
- ``temporal_consistency``: mean ``1 - distance`` between consecutive frames' faces.

There is no line-up and no prompt fidelity: the world's attribute probes read only cameo-tiny's
cartoon world. Leakage is the share of frames, on prompts that do not name the subject, whose
largest face the judge calls the subject (``same_person``), with the LoRA minus without.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from .. import faces
from ..data.images import IMAGE_EXT, UnreadableImage, open_image
from ..faces import FaceReferences
from ..faces.models import load as load_face_models

PHOTO_EXT = IMAGE_EXT  # what training reads as photos (HEIC/HEIF and TIFF included)
MAX_PHOTO_SIDE = 2048  # reference photos are reduced to this while decoding (faces stay large)
PROMPT_FIDELITY_NOTE = "not measured (cameo's world probes read only cameo-tiny's cartoon world)"
LEAKAGE_NOTE = (
    "share of frames, on prompts that do not name the subject, whose largest face the face "
    f"judge calls the subject (distance < {faces.SAME_PERSON_DISTANCE}), LoRA minus base"
)
FACE_KEYS = (
    "face_found",
    "same_person",
    "distance",
    "similarity",
    "similarity_normalised",
    "identity",
    "identity_normalised",
    "temporal_consistency",
)


def read_photo(path: Path, max_side: int = MAX_PHOTO_SIDE) -> np.ndarray:
    """A photo upright as uint8 (H, W, 3), longest side <= max_side, decoded as training
    decodes it (:func:`cameo.data.open_image`): HEIC/HEIF, any mode, EXIF rotation applied,
    large photos reduced while decoding rather than refused. Raises
    :class:`~cameo.data.images.UnreadableImage` (a ValueError) with the reason."""
    img = open_image(Path(path), max_side).image
    img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return np.asarray(img)


def read_photos(folder: Path) -> tuple[list[str], list[np.ndarray]]:
    """The photos of a folder, sorted by name: (names, upright uint8 RGB images). Files that
    cannot be decoded are left out, as training leaves them out (``cameo photos`` says why)."""
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in PHOTO_EXT)
    names, images = [], []
    for p in files:
        try:
            images.append(read_photo(p))
        except UnreadableImage:
            continue
        names.append(p.name)
    if not images:
        raise FileNotFoundError(f"no readable photos (png/jpg/webp/heic) in {folder}")
    return names, images


def consistency(descriptors: np.ndarray) -> float | None:
    """Mean ``1 - distance`` between consecutive frames' faces ((F, 128), NaN = none)."""
    d = np.asarray(descriptors, np.float64)
    pairs = ~np.isnan(d[1:]).any(axis=1) & ~np.isnan(d[:-1]).any(axis=1)  # (F-1,)
    if not pairs.any():
        return None
    return float((1.0 - np.linalg.norm(d[1:] - d[:-1], axis=1)[pairs]).mean())


class FaceJudge:
    """The face descriptor as the judge of a set of clips, against one person's photos."""

    name = "face"

    def __init__(self, refs: FaceReferences | None, names: Sequence[str] = ()) -> None:
        """``refs``: the person's descriptors (None: only whether faces are found);
        ``names``: the reference photos' file names, for the report."""
        self.refs = refs
        self.names = list(names)

    @classmethod
    def from_images(cls, images: Sequence[np.ndarray], names: Sequence[str] = ()) -> FaceJudge:
        """Describe the largest face of each photo; ValueError when none has a face,
        :class:`~cameo.faces.FacesUnavailable` without the faces extra."""
        return cls(FaceReferences.from_images(images), names)

    @classmethod
    def from_folder(cls, folder: Path | None) -> FaceJudge:
        """The judge for a folder of reference photos (None: no references)."""
        if folder is None:
            load_face_models()  # FacesUnavailable now rather than on the first clip
            return cls(None)
        names, images = read_photos(folder)
        try:
            return cls.from_images(images, names)
        except ValueError as err:
            raise ValueError(f"{folder}: {err}") from err

    def score(self, frames: np.ndarray, prompt: str) -> dict:
        """One clip (uint8 (F, H, W, 3), native resolution): a record whose ``people`` holds
        one entry, the frames' largest faces, with the keys the module docstring lists."""
        descriptors, found = faces.describe_frames(frames)  # (F, 128) NaN rows, (F,) bool
        rec: dict[str, object] = {
            "region": "whole",
            "face_found": float(found.mean()) if len(found) else 0.0,
            "prompt_fidelity": None,
            "temporal_consistency": consistency(descriptors),
        }
        if self.refs is not None:
            s = faces.score(descriptors, found, self.refs)
            per_frame = faces.distances(descriptors, self.refs.centroid)  # (F,) NaN = none
            rec.update({k: s[k] for k in ("face_found", "distance", "same_person", "similarity")})
            rec["similarity_normalised"] = s["similarity_normalised"]
            rec["identity"] = s["similarity"]
            likeness = s["similarity_normalised"]
            if likeness is None:  # a single reference, or no face described
                likeness = s["similarity"] or 0.0
            rec["identity_normalised"] = likeness * float(s["described"])
            rec["distance_per_frame"] = [
                None if np.isnan(x) else round(float(x), 4) for x in per_frame
            ]
        return {"prompt": prompt, "frames": len(frames), "people": [rec]}

    def summarise(self, clips: list[dict]) -> dict:
        """Means over clips of the face numbers present; no ``identity`` values when no clip
        showed a face (nothing to choose a checkpoint by)."""
        people = [p for c in clips for p in c["people"]]
        out: dict[str, object] = {"clips": len(clips), "identity_judge": self.name}
        for k in FACE_KEYS:
            vals = [float(p[k]) for p in people if p.get(k) is not None]
            if vals:
                out[k] = float(np.mean(vals))
        if not any(p.get("face_found") for p in people):
            out.pop("identity", None)
            out.pop("identity_normalised", None)
        return out

    def report_fields(self) -> dict:
        """What a report says about the references and the numbers it cannot give."""
        out: dict[str, object] = {
            "same_person_distance": faces.SAME_PERSON_DISTANCE,
            "prompt_fidelity": None,
            "prompt_fidelity_note": PROMPT_FIDELITY_NOTE,
        }
        if self.refs is not None:
            named = len(self.names) == len(self.refs.used) + len(self.refs.skipped)
            label = (lambda i: self.names[i]) if named else str
            out["references"] = {
                "used": [label(i) for i in self.refs.used],
                "no_face": [label(i) for i in self.refs.skipped],
            }
            out["reference_distance"] = self.refs.loo_distance
            out["reference_similarity"] = self.refs.loo_similarity
        return out

    def leakage(self, lora: dict, base: dict) -> dict:
        """``same_person`` on prompts that do not name the subject, LoRA minus base."""
        lo, ba = lora.get("same_person"), base.get("same_person")
        if lo is None or ba is None:
            return {}
        # flat numbers: a summary's dict values are prompt groups
        return {
            "leakage": lo - ba,
            "leakage_lora": lo,
            "leakage_base": ba,
            "leakage_note": LEAKAGE_NOTE,
        }


def photos_look_real(folder: Path, sample: int = 8, world_side: int = 128) -> bool:
    """Whether a folder's photos are real photos of a face rather than world renders.

    Real: the median photo's shorter side is over ``world_side`` (cameo-tiny renders are
    64 px) and the face detector finds a face in at least half of the first ``sample``
    photos. Without the faces extra only the size is checked.
    """
    _, images = read_photos(folder)
    if np.median([min(i.shape[:2]) for i in images]) <= world_side:
        return False
    if not faces.available():
        return True
    checked = images[:sample]
    return sum(bool(faces.detect(i)) for i in checked) * 2 >= len(checked)
