"""Data in: a user's photo folder, decoded (``images``, ``clips``), bucketed and cropped around
the subject's face (``buckets``, ``subject``), captioned (``captions``) and checked
(``photos``, ``report``); folders of the built-in world's people (``world_folders``); clip
writers (``media``)."""

from .buckets import Bucket, Framing, Target, make_buckets, target_for_base, training_target
from .captions import TRIGGER_PLACEHOLDER, apply_trigger
from .images import IMAGE_EXT, VIDEO_EXT, open_image, to_rgb
from .photos import (
    DatasetError,
    DatasetReport,
    Item,
    check_photos,
    read_clip,
    read_image,
    scan_folder,
)
from .quality import average_hash
from .report import PhotoEntry, PhotoReport, PhotoWarning

__all__ = [
    "IMAGE_EXT",
    "TRIGGER_PLACEHOLDER",
    "VIDEO_EXT",
    "Bucket",
    "DatasetError",
    "DatasetReport",
    "Framing",
    "Item",
    "PhotoEntry",
    "PhotoReport",
    "PhotoWarning",
    "Target",
    "apply_trigger",
    "average_hash",
    "check_photos",
    "make_buckets",
    "open_image",
    "read_clip",
    "read_image",
    "scan_folder",
    "target_for_base",
    "to_rgb",
    "training_target",
]
