"""Identity of one real person in generated frames, judged with the face descriptor.

The person is given by reference photos. Each frame's largest face is described and compared
with the *centroid* (mean descriptor) of the references: the centroid averages away what is
particular to one photo (light, pose, expression), and one number per frame is what a clip
needs. Similarity is ``1 - distance`` (Euclidean, the metric the descriptor was trained on and
the one its published threshold uses). It is normalised by the references' own leave-one-out
similarity (each reference against the centroid of the others), so 1.0 means "as close to the
person as their own photos are to each other"; strangers score far below (about 0.2 for
LFW faces against the astronaut's photos in the tests).

Past :func:`describe_frames` everything here is plain numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .describe import DESCRIPTOR_SIZE, SAME_PERSON_DISTANCE, describe, distances
from .detect import Box, detect


def leave_one_out_distances(descriptors: np.ndarray) -> np.ndarray:
    """Each descriptor's distance to the mean of the others: (N, 128) -> (N,), N >= 2."""
    d = np.asarray(descriptors, np.float64)
    n = len(d)
    if n < 2:
        raise ValueError("leave-one-out needs at least two descriptors")
    others = (d.sum(axis=0, keepdims=True) - d) / (n - 1)  # (N, 128) centroid without row i
    return np.linalg.norm(d - others, axis=1)


@dataclass(frozen=True)
class FaceReferences:
    """Descriptors of one person's reference photos."""

    descriptors: np.ndarray  # (N, 128) float32, one per photo in which a face was described
    used: tuple[int, ...] = ()  # indices of the photos described, in the order given
    skipped: tuple[int, ...] = ()  # photos without a face (and no box given)

    def __post_init__(self) -> None:
        d = np.asarray(self.descriptors)
        if d.ndim != 2 or d.shape[1] != DESCRIPTOR_SIZE or len(d) == 0:
            raise ValueError(
                f"references need (N >= 1, {DESCRIPTOR_SIZE}) descriptors, got {d.shape}"
            )

    @classmethod
    def from_images(
        cls, images: Sequence[np.ndarray], *, upsample: int = 1, box: Box | None = None
    ) -> FaceReferences:
        """Describe the largest face of each photo ((H, W, 3) uint8 RGB, upright).

        Photos without a detected face are described in ``box`` when given, else skipped.
        Raises ValueError when no photo could be described.
        """
        vecs, used, skipped = [], [], []
        for i, image in enumerate(images):
            faces = detect(image, upsample)
            if faces or box is not None:
                vecs.append(describe(image, faces[0] if faces else None, box=box))
                used.append(i)
            else:
                skipped.append(i)
        if not vecs:
            raise ValueError(f"no face found in any of the {len(images)} reference photos")
        return cls(np.stack(vecs), tuple(used), tuple(skipped))

    @property
    def centroid(self) -> np.ndarray:
        """Mean descriptor (128,) float64: the person."""
        return np.asarray(self.descriptors, np.float64).mean(axis=0)

    @property
    def loo_distance(self) -> float | None:
        """Mean leave-one-out distance among the references (None with a single photo)."""
        if len(self.descriptors) < 2:
            return None
        return float(leave_one_out_distances(self.descriptors).mean())

    @property
    def loo_similarity(self) -> float | None:
        """``1 - loo_distance``: how alike the person's own photos are (None with one photo)."""
        d = self.loo_distance
        return None if d is None else 1.0 - d


def describe_frames(
    frames: np.ndarray | Sequence[np.ndarray],
    *,
    upsample: int = 1,
    fallback_box: Box | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Descriptors of each frame's largest face: (F, H, W, 3) uint8 -> ((F, 128), (F,) bool).

    Rows are NaN where nothing was described. The mask says where the detector found a face;
    with ``fallback_box`` the other frames are described in that box (mask stays False).
    """
    out = np.full((len(frames), DESCRIPTOR_SIZE), np.nan, np.float32)  # (F, 128)
    found = np.zeros(len(frames), bool)  # (F,)
    for i, frame in enumerate(frames):
        faces = detect(frame, upsample)
        found[i] = bool(faces)
        if faces or fallback_box is not None:
            out[i] = describe(frame, faces[0] if faces else None, box=fallback_box)
    return out, found


def score(
    descriptors: np.ndarray, found: np.ndarray, refs: FaceReferences
) -> dict[str, float | int | None]:
    """Identity numbers for frames' descriptors ((F, 128), NaN rows = none) against ``refs``.

    - ``face_found``: share of frames where the detector found a face.
    - ``described``: share of frames described (found, or in the fallback box).
    - ``distance``: mean distance of the described faces to the references' centroid.
    - ``same_person``: share of all frames described and nearer than ``SAME_PERSON_DISTANCE``.
    - ``similarity``: mean ``1 - distance`` over the described frames.
    - ``similarity_normalised``: ``similarity / refs.loo_similarity``; 1.0 = as close as the
      person's own photos are to each other.
    - ``reference_distance``: the references' leave-one-out distance.

    Means over no frames, and the normalised value with a single reference, are None.
    """
    d = np.asarray(descriptors, np.float64)  # (F, 128)
    frames = len(d)
    described = ~np.isnan(d).any(axis=1)  # (F,)
    dist = distances(d[described], refs.centroid)  # (D,)
    ref_sim = refs.loo_similarity
    similarity = float((1.0 - dist).mean()) if len(dist) else None
    normalised = None
    if similarity is not None and ref_sim is not None and ref_sim > 0:
        normalised = similarity / ref_sim
    share = 1.0 / frames if frames else 0.0
    return {
        "frames": frames,
        "face_found": float(np.count_nonzero(found)) * share,
        "described": float(np.count_nonzero(described)) * share,
        "distance": float(dist.mean()) if len(dist) else None,
        "same_person": float(np.count_nonzero(dist < SAME_PERSON_DISTANCE)) * share,
        "similarity": similarity,
        "similarity_normalised": normalised,
        "reference_distance": refs.loo_distance,
    }


def judge_frames(
    frames: np.ndarray | Sequence[np.ndarray],
    refs: FaceReferences,
    *,
    upsample: int = 1,
    fallback_box: Box | None = None,
) -> dict[str, float | int | None]:
    """How much the face in ``frames`` ((F, H, W, 3) uint8 RGB) is the references' person.

    Describes each frame (:func:`describe_frames`) and scores it (:func:`score`, which lists
    the keys returned).
    """
    descriptors, found = describe_frames(frames, upsample=upsample, fallback_box=fallback_box)
    return score(descriptors, found, refs)
