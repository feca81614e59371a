"""The photo check's warnings: per photo (faces, crop, exposure) and across the folder (blur
against the folder's median, identity against the other photos' subject)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..faces import SAME_PERSON_DISTANCE
from .buckets import Framing
from .quality import BLUR_ABSOLUTE, BLUR_RELATIVE, exposure_problem
from .report import MIN_FACE_FRACTION, PhotoEntry, PhotoReport
from .subject import FoundFace, distances_to_others


def face_warnings(
    e: PhotoEntry,
    found: Sequence[FoundFace],
    subject: int | None,
    framing: Framing,
    faces_checked: bool,
    clipped: tuple[float, float],
    matched: bool = False,
) -> None:
    """Warnings about the faces of one photo (or clip frame) and its exposure. ``clipped``:
    the shares of the measured region at 0-5 and 250-255; ``matched``: the subject was chosen
    by the folder's descriptor (else it is the largest face)."""
    problem = exposure_problem(e.brightness, *clipped)
    if problem:
        where = "face" if subject is not None else "picture's centre"
        e.warn(
            problem.replace("-", ""),
            f"{problem}: the {where} averages {e.brightness:.0f} of 255"
            + (f", {max(clipped):.0%} of it clipped" if max(clipped) > 0.05 else ""),
        )
    if not faces_checked:
        return
    if subject is None:
        e.warn(
            "no_face",
            "no face found: centre crop; a photo without a visible face "
            "teaches the LoRA little about the person",
        )
        return
    if len(found) > 1:
        why = "it matches the other photos" if matched else "the largest"
        rest = "stay in the crop" if framing.others_in_crop else "are cropped out"
        e.warn(
            "several_faces",
            f"{len(found)} faces: the subject is #{subject + 1} ({why}); the others {rest}",
        )
        if framing.others_in_crop:
            e.warn(
                "others_in_crop",
                f"no {framing.bucket} crop leaves the other faces out: the LoRA may learn "
                "them as the person; crop the photo yourself or leave it out",
            )
    b = framing.bucket
    scale = b.width / (framing.crop[2] - framing.crop[0])  # decoded px -> bucket px
    px = found[subject].width * scale
    need = min(b.width, b.height) * MIN_FACE_FRACTION
    if px < need:
        e.warn(
            "face_small",
            f"face too small: {px:.0f} px wide at {b} training, under {need:.0f} (1/8 of the "
            "shorter side); use a closer photo",
        )


def folder_warnings(
    report: PhotoReport, subjects: Sequence[tuple[PhotoEntry, np.ndarray | None]]
) -> None:
    """Blur against the folder's median sharpness of faces, and identity: each photo's subject
    against the median descriptor of the other photos' subjects."""
    measured = [e for e in report.entries if e.used and e.sharpness is not None]
    on_faces = [e.sharpness for e in measured if e.subject is not None]
    median = float(np.median(on_faces)) if len(on_faces) >= 3 else None
    for e in measured:
        relative = median is not None and e.subject is not None
        if e.sharpness < BLUR_ABSOLUTE:
            e.warn("blurry", f"blurry: sharpness {e.sharpness:.0f}, under {BLUR_ABSOLUTE:.0f}")
        elif relative and e.sharpness < BLUR_RELATIVE * median:
            e.warn(
                "blurry",
                f"blurry: sharpness {e.sharpness:.0f}, {e.sharpness / median:.0%} of the "
                f"folder's median {median:.0f} (under {BLUR_RELATIVE:.0%})",
            )
    distances = distances_to_others([d for _, d in subjects])
    for (e, _), dist in zip(subjects, distances, strict=True):
        e.identity_distance = dist
        if dist is not None and dist > SAME_PERSON_DISTANCE:
            e.warn(
                "other_person",
                f"probably not the same person: the face is {dist:.2f} from the other "
                f"photos' subject (same person under {SAME_PERSON_DISTANCE})",
            )
