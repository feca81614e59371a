"""A second identity judge for the world's people: dlib's face descriptor in a line-up.

cameo's eyes were trained on the world's renders; dlib's ResNet descriptor (``cameo.faces``,
the ``faces`` extra) never saw a cartoon face, let alone cameo's training. It reads the same
64 px frames (its HOG detector enlarges them to 400 px to find the face; the descriptor is cut
from the frame's own pixels) and judges a clip as the eyes' line-up does:

- a clip is the mean descriptor of the frames in which a face is found (every
  ``FRAME_STEP``-th frame is read); a clip without a found face is not identified;
- the person is the mean descriptor of their photos' faces; the line-up holds the person and
  every distractor with a face found in at least one of its stills (the eyes' 99 distractors);
- identified: the person is the nearest (Euclidean) of the line-up.

The detector finds a face in only about half of the world's real renders (turned heads, hats,
cartoon proportions), so its detection rate is reported beside every number, and its ceiling
is the same judge on the person's real renders.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .. import faces

FRAME_STEP = 4  # frames 0, 4, 8, 12, 16 of a 17-frame clip


def found_descriptors(frames: np.ndarray, step: int = 1) -> tuple[np.ndarray, int]:
    """Descriptors of the largest face of every ``step``-th frame of uint8 (F, H, W, 3):
    ((K, 128) for the K frames with a face found, the number of frames read)."""
    picked = frames[::step]
    out = []
    for frame in picked:
        found = faces.detect(frame)
        if found:
            out.append(faces.describe(frame, found[0]))
    return np.array(out, np.float64).reshape(-1, faces.DESCRIPTOR_SIZE), len(picked)


class FaceLineup:
    """Distractors' mean descriptors; identifies a clip's face among them and one person."""

    def __init__(self, gallery: np.ndarray) -> None:
        """``gallery``: (N, 128) mean descriptors of the distractors with a face."""
        self.gallery = np.asarray(gallery, np.float64)

    @classmethod
    def from_stills(cls, stills: Callable[[], np.ndarray], cache: Path | None = None) -> FaceLineup:
        """The line-up of distractors whose stills ``stills()`` gives, uint8 (N, S, H, W, 3):
        each distractor is the mean of the faces found in its S stills, and left out without
        one. ``cache``: an .npy file that keeps the gallery between runs (the stills are fixed;
        rendering them is most of the cost), written whole or not at all (two runs at once see
        a complete file or none); a folder that cannot be written only costs the rebuild."""
        if cache is not None and Path(cache).is_file():
            return cls(np.load(cache))
        rows = []
        for person in stills():
            d, _ = found_descriptors(person)
            if len(d):
                rows.append(d.mean(0))
        lineup = cls(np.stack(rows))
        if cache is not None:
            _save_atomically(Path(cache), lineup.gallery)
        return lineup

    @property
    def size(self) -> int:
        """People in the line-up: the distractors and the person."""
        return len(self.gallery) + 1

    def judge(self, person: np.ndarray, frames: np.ndarray, step: int = FRAME_STEP) -> dict:
        """One clip uint8 (F, H, W, 3) against ``person`` (128,): ``face_found`` (share of the
        frames read), ``identified`` (the person is the nearest; False without a face) and
        ``distance`` to the person (None without a face)."""
        d, read = found_descriptors(frames, step)
        if not len(d):
            return {"face_found": 0.0, "identified": False, "distance": None}
        clip = d.mean(0)
        mine = float(np.linalg.norm(clip - person))
        nearest_other = float(np.linalg.norm(self.gallery - clip, axis=1).min())
        return {"face_found": len(d) / read, "identified": mine < nearest_other, "distance": mine}


def person_descriptor(photos: np.ndarray) -> np.ndarray | None:
    """Mean descriptor (128,) of the faces found in a person's photos uint8 (N, H, W, 3);
    None when no photo shows a face the detector finds."""
    d, _ = found_descriptors(photos)
    return d.mean(0) if len(d) else None


def _save_atomically(path: Path, array: np.ndarray) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_name(f"{path.name}.{os.getpid()}.part")
        with part.open("wb") as f:
            np.save(f, array)
        part.replace(path)
    except OSError:
        pass
