"""Decoding what phones make: photos of any format and mode, upright and reduced while decoding.

JPEG, PNG, WebP, BMP, TIFF and HEIC/HEIF (``pillow-heif``), in any mode (CMYK, 16-bit, palette,
alpha). EXIF orientation is applied, so every coordinate cameo reports is a pixel of the photo
as it is shown. Large photos are reduced while decoding (JPEG's DCT scaling through Pillow's
``draft``, ``reduce`` otherwise) to what the base needs, so a 48 MP photo loads in a fraction
of a second and is never refused; only sizes no camera makes are refused, unread.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pillow_heif
from PIL import Image, ImageOps

HEIF_EXT = {".heic", ".heif", ".hif"}
IMAGE_EXT = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", *HEIF_EXT}
VIDEO_EXT = {".mp4", ".mov", ".m4v", ".webm", ".mkv", ".avi", ".gif"}
# Larger declared sizes are refused unread. The largest phone sensors make 200 MP photos
# (16320x12240); decoded reduced (JPEG at 1/8) those cost ~10 MB, HEIC ~600 MB.
MAX_DECLARED_PIXELS = 250_000_000
MIN_SIDE = 16  # smaller images cannot hold a recognisable face; refused
DETECT_SIDE = 1600  # the face detector looks at up to this longest side (faces.detect)

_PIXEL_LIMIT_LOCK = threading.Lock()


class UnreadableImage(ValueError):
    """A file that cannot be used as a photo; the message is the reason, for the report."""


@functools.cache
def register_heif() -> None:
    """Let Pillow open HEIC/HEIF (once per process)."""
    pillow_heif.register_heif_opener()


@dataclass
class Decoded:
    """One photo, upright, as RGB, possibly reduced: ``scale`` maps its pixels to the file's."""

    image: Image.Image  # RGB, upright, (round(H * scale), round(W * scale))
    size: tuple[int, int]  # (width, height) of the upright photo at full resolution
    scale: float  # decoded width / full width (1.0 when not reduced)
    notes: list[str] = field(default_factory=list)
    reduced_by: str = ""  # "draft 1/4", "reduce 2", "draft 1/2 + reduce 2" or ""

    def to_full(self, box: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
        """A box in decoded pixels as whole pixels of the full-resolution photo, outward."""
        w, h = self.size
        left, top, right, bottom = (v / self.scale for v in box)
        return (
            max(0, int(np.floor(left + 1e-6))),
            max(0, int(np.floor(top + 1e-6))),
            min(w, int(np.ceil(right - 1e-6))),
            min(h, int(np.ceil(bottom - 1e-6))),
        )


def to_rgb(img: Image.Image, background=(255, 255, 255)) -> Image.Image:
    """Any mode (palette, alpha, CMYK, 16-bit, grey) -> RGB; alpha composited on ``background``."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        img = Image.fromarray((arr / max(arr.max(), 1) * 255).astype(np.uint8))
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        base = Image.new("RGB", rgba.size, background)
        base.paste(rgba, mask=rgba.getchannel("A"))
        return base
    return img.convert("RGB")


def decode_side(height: int, width: int) -> int:
    """Longest side a photo is decoded at for a base of ``height`` x ``width``: enough for the
    face detector and for a crop of half the photo's side at full bucket resolution."""
    return max(DETECT_SIDE, 2 * max(height, width))


@contextlib.contextmanager
def _own_size_guard() -> Iterator[None]:
    """Pillow's decompression-bomb guard off (it refuses 179 MP, and warns from 89 MP): cameo
    checks the declared size itself, right after reading the header (``MAX_DECLARED_PIXELS``)."""
    with _PIXEL_LIMIT_LOCK:
        before = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = before


def _mode_notes(im: Image.Image) -> list[str]:
    notes = []
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        notes.append("transparent areas composited on white")
    if im.mode not in ("RGB", "RGBA", "P", "L"):
        notes.append(f"{im.mode} converted to RGB")
    return notes


def _open(path: Path) -> Image.Image:
    """Open (header only) with the size guards; raises UnreadableImage with the reason."""
    register_heif()
    try:
        with _own_size_guard():
            im = Image.open(path)
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise UnreadableImage(f"not a readable image ({e.__class__.__name__})") from e
    w, h = im.size
    if w * h > MAX_DECLARED_PIXELS:
        im.close()
        raise UnreadableImage(
            f"absurd size: {w}x{h} ({w * h / 1e6:.0f} MP; cameo reads up to "
            f"{MAX_DECLARED_PIXELS / 1e6:.0f} MP)"
        )
    if min(w, h) < MIN_SIDE:
        im.close()
        raise UnreadableImage(f"too small ({w}x{h}; need at least {MIN_SIDE} px)")
    return im


def open_image(path: Path, max_side: int = DETECT_SIDE) -> Decoded:
    """Decode one photo upright as RGB, its longest side reduced towards ``max_side`` (never
    below it) while decoding. Raises :class:`UnreadableImage` with a reason for the report."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise UnreadableImage("empty file")
    im = _open(path)
    try:
        full = im.size  # as stored; swapped below if EXIF turns it
        notes = _mode_notes(im)
        steps = []
        if im.format == "JPEG" and max(full) > max_side:
            s = max_side / max(full)
            wanted = (max(1, int(np.ceil(full[0] * s))), max(1, int(np.ceil(full[1] * s))))
            im.draft(None, wanted)
            if im.size != full:
                steps.append(f"draft 1/{round(full[0] / im.size[0])}")
        im.load()
        upright = ImageOps.exif_transpose(im)
        rgb = to_rgb(upright)
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise UnreadableImage(f"not a readable image ({e.__class__.__name__})") from e
    finally:
        im.close()
    k = max(rgb.size) // max_side
    if k >= 2:
        rgb = rgb.reduce(k)
        steps.append(f"reduce {k}")
    turned = upright.size != im.size
    size = (full[1], full[0]) if turned else full
    return Decoded(rgb, size, rgb.size[0] / size[0], notes, " + ".join(steps))
