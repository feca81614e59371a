"""Real faces: detection, alignment and a 128-d identity descriptor from dlib, offline.

cameo's only gate to dlib. The models ship in PyPI packages (``dlib-bin`` and
``face-recognition-models``, the ``faces`` extra) and run on the CPU; without them cameo still
works, and whatever needs a face raises :class:`FacesUnavailable` with the install command.

    faces = detect(photo)                      # [Face(box, score, landmarks)], largest first
    vec = describe(photo, faces[0])            # (128,) float32
    refs = FaceReferences.from_images(photos)  # one person
    judge_frames(clip, refs)                   # {"face_found", "same_person", ...}
"""

from .describe import (
    DESCRIPTOR_SIZE,
    SAME_PERSON_DISTANCE,
    NoFaceFound,
    central_box,
    describe,
    distances,
    same_person,
)
from .detect import Box, Face, detect
from .judge import FaceReferences, describe_frames, judge_frames, leave_one_out_distances, score
from .models import FacesUnavailable, available

__all__ = [
    "DESCRIPTOR_SIZE",
    "SAME_PERSON_DISTANCE",
    "Box",
    "Face",
    "FaceReferences",
    "FacesUnavailable",
    "NoFaceFound",
    "available",
    "central_box",
    "describe",
    "describe_frames",
    "detect",
    "distances",
    "judge_frames",
    "leave_one_out_distances",
    "same_person",
    "score",
]
