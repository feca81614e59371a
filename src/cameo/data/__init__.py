"""Data in: a user's photo folder, checked and captioned (``photos``); folders of the built-in
world's people (``world_folders``); clip writers (``media``)."""

from .photos import (
    IMAGE_EXT,
    TRIGGER_PLACEHOLDER,
    VIDEO_EXT,
    DatasetError,
    DatasetReport,
    Item,
    apply_trigger,
    average_hash,
    fit_to_size,
    read_clip,
    read_image,
    scan_folder,
    to_rgb,
)

__all__ = [
    "IMAGE_EXT",
    "TRIGGER_PLACEHOLDER",
    "VIDEO_EXT",
    "DatasetError",
    "DatasetReport",
    "Item",
    "apply_trigger",
    "average_hash",
    "fit_to_size",
    "read_clip",
    "read_image",
    "scan_folder",
    "to_rgb",
]
