"""A user's photo folder -> checked, captioned, model-sized training items, with a report.

Accepted: images (png, jpg, jpeg, webp, bmp) and short clips (mp4, gif, webm; sampled to 4k+1
frames), captioned by a same-name ``.txt``, or by ``metadata.jsonl`` / ``metadata.csv`` rows
(``file_name`` plus ``text`` or ``caption``). Every file gets a line in the report: used, or
skipped and why. Nothing here raises on a bad file; only too few usable files is an error.
"""

from __future__ import annotations

import csv
import hashlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from PIL import Image, ImageOps

IMAGE_EXT = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
VIDEO_EXT = {".mp4", ".gif", ".webm"}
MAX_PIXELS = 40_000_000  # larger images are refused unread (decompression bombs)
MIN_SIDE = 16  # smaller images cannot hold a recognisable face; refused
NEAR_DUPLICATE_BITS = 3  # average-hash distance at or below which two photos are near duplicates
TRIGGER_PLACEHOLDER = "[trigger]"


class DatasetError(ValueError):
    """The folder cannot be trained on (too few usable photos, or not a folder)."""


@dataclass
class Item:
    path: Path
    caption: str
    frames: np.ndarray  # (F, H, W, 3) uint8, F = 1 for photos, 4k+1 for clips
    note: str = ""


@dataclass
class DatasetReport:
    folder: Path
    items: list[Item] = field(default_factory=list)
    lines: list[tuple[str, str]] = field(default_factory=list)  # (file, status)
    warnings: list[str] = field(default_factory=list)

    @property
    def usable(self) -> int:
        return len(self.items)

    def format(self) -> str:
        photos = sum(1 for i in self.items if i.frames.shape[0] == 1)
        clips = self.usable - photos
        captioned = sum(1 for i in self.items if "template caption" not in i.note)
        head = (
            f"dataset {self.folder}: {self.usable} usable ({photos} photos, {clips} clips), "
            f"{captioned} with captions, {len(self.lines) - self.usable} skipped"
        )
        body = [f"  {name}: {status}" for name, status in self.lines]
        return "\n".join([head, *body, *(f"  warning: {w}" for w in self.warnings)])


def apply_trigger(caption: str, trigger: str) -> str:
    """Put the trigger word in: replace ``[trigger]``, or prepend it when absent."""
    caption = " ".join(caption.split())
    if not trigger:
        return caption
    if TRIGGER_PLACEHOLDER in caption:
        return caption.replace(TRIGGER_PLACEHOLDER, trigger)
    if trigger.lower() in caption.lower().replace(",", " ").split():
        return caption
    return f"{trigger}, {caption}" if caption else trigger


def _metadata_captions(folder: Path) -> dict[str, str]:
    caps: dict[str, str] = {}
    jl = folder / "metadata.jsonl"
    if jl.is_file():
        for line in jl.read_text(errors="replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and "file_name" in row:
                caps[str(row["file_name"])] = str(row.get("text") or row.get("caption") or "")
    cv = folder / "metadata.csv"
    if cv.is_file():
        with open(cv, newline="", errors="replace") as f:
            for row in csv.DictReader(f):
                if row.get("file_name"):
                    caps[row["file_name"]] = row.get("text") or row.get("caption") or ""
    return caps


def fit_to_size(img: Image.Image, height: int, width: int) -> np.ndarray:
    """Resize so the image covers height x width, then centre-crop: (H, W, 3) uint8."""
    scale = max(width / img.width, height / img.height)
    size = (max(width, round(img.width * scale)), max(height, round(img.height * scale)))
    img = img.resize(size, Image.LANCZOS)
    left, top = (img.width - width) // 2, (img.height - height) // 2
    return np.asarray(img.crop((left, top, left + width, top + height)))


def to_rgb(img: Image.Image, background=(255, 255, 255)) -> Image.Image:
    """Any mode (palette, alpha, CMYK, 16-bit, grey) -> RGB; alpha composited on ``background``."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        img = Image.fromarray((arr / max(arr.max(), 1) * 255).astype(np.uint8))
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA"):
        rgba = img.convert("RGBA")
        base = Image.new("RGB", rgba.size, background)
        base.paste(rgba, mask=rgba.getchannel("A"))
        return base
    return img.convert("RGB")


def read_image(path: Path, height: int, width: int) -> tuple[np.ndarray, str]:
    """One photo as (1, H, W, 3) uint8 and a note; raises ValueError with a readable reason."""
    if path.stat().st_size == 0:
        raise ValueError("empty file")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise ValueError(
                        f"{im.width}x{im.height} is too large (decompression bomb guard)"
                    )
                if min(im.size) < MIN_SIDE:
                    raise ValueError(
                        f"too small ({im.width}x{im.height}; need at least {MIN_SIDE} px)"
                    )
                im.load()
                notes = []
                if min(im.size) < min(height, width):
                    notes.append(f"small ({im.width}x{im.height}), upscaled")
                if im.mode in ("RGBA", "LA", "PA") or (
                    im.mode == "P" and "transparency" in im.info
                ):
                    notes.append("transparent areas composited on white")
                if im.mode not in ("RGB", "RGBA", "P", "L"):
                    notes.append(f"{im.mode} converted to RGB")
                note = "; ".join(notes)
                img = to_rgb(ImageOps.exif_transpose(im))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ValueError(f"too large (decompression bomb guard): {e}") from e
        except (OSError, SyntaxError) as e:
            raise ValueError(f"not a readable image ({e.__class__.__name__})") from e
    return fit_to_size(img, height, width)[None], note


def read_clip(path: Path, height: int, width: int, max_frames: int = 17) -> tuple[np.ndarray, str]:
    """A clip sampled evenly to the largest 4k+1 <= min(length, max_frames) frames."""

    if path.stat().st_size == 0:
        raise ValueError("empty file")
    try:
        arr = iio.imread(path, index=None)
    except Exception as e:  # imageio raises many types for broken videos
        raise ValueError(f"not a readable clip ({e.__class__.__name__})") from e
    if arr.ndim == 3:
        arr = arr[None]
    n = min(len(arr), max_frames)
    n = (n - 1) // 4 * 4 + 1
    idx = np.linspace(0, len(arr) - 1, n).round().astype(int)
    frames = np.stack([fit_to_size(to_rgb(Image.fromarray(arr[i])), height, width) for i in idx])
    return frames, f"{len(arr)} frames -> {n}"


def scan_folder(
    folder: Path, trigger: str, *, height: int = 64, width: int = 64, min_usable: int = 4
) -> DatasetReport:
    """Read and check a training folder. Raises DatasetError if fewer than ``min_usable``
    files can be used; the report says why each skipped file was skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder} is not a folder")
    meta = _metadata_captions(folder)
    report = DatasetReport(folder)
    media_stems: set[str] = set()
    seen_bytes: dict[str, str] = {}
    hashes: list[tuple[str, np.ndarray]] = []
    for path in sorted(folder.iterdir()):
        ext = path.suffix.lower()
        if path.name.startswith(".") or path.is_dir():
            continue
        if ext == ".txt" or path.name in ("metadata.jsonl", "metadata.csv", "truth.json"):
            continue
        if ext not in IMAGE_EXT | VIDEO_EXT:
            report.lines.append((path.name, "skipped: not an image or clip"))
            continue
        media_stems.add(path.stem)
        digest = _file_digest(path)
        if digest in seen_bytes:
            report.lines.append((path.name, f"skipped: exact duplicate of {seen_bytes[digest]}"))
            continue
        seen_bytes[digest] = path.name
        try:
            frames, note = (read_image if ext in IMAGE_EXT else read_clip)(path, height, width)
        except ValueError as e:
            report.lines.append((path.name, f"skipped: {e}"))
            continue
        caption, cap_note = _caption_for(path, meta, trigger)
        ahash = average_hash(frames[0])
        near = next(
            (name for name, h in hashes if int((h != ahash).sum()) <= NEAR_DUPLICATE_BITS), None
        )
        hashes.append((path.name, ahash))
        dup_note = f"near duplicate of {near}" if near else ""
        notes = "; ".join(n for n in (note, cap_note, dup_note) if n)
        report.items.append(Item(path, caption, frames, notes))
        report.lines.append((path.name, "used" + (f" ({notes})" if notes else "")))
    for txt in sorted(folder.glob("*.txt")):
        if txt.stem not in media_stems:
            report.warnings.append(f"{txt.name} has no image or clip beside it")
    if report.usable < min_usable:
        raise DatasetError(
            f"only {report.usable} usable photos or clips in {folder} (need at least {min_usable})\n"
            + report.format()
        )
    return report


def _file_digest(path: Path) -> str:

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def average_hash(frame: np.ndarray, size: int = 8) -> np.ndarray:
    """64-bit average hash of a frame: grey 8x8, thresholded at its mean (for near duplicates)."""
    grey = np.asarray(
        Image.fromarray(frame).convert("L").resize((size, size), Image.BOX), dtype=np.float32
    )
    return (grey > grey.mean()).flatten()


def _caption_for(path: Path, meta: dict[str, str], trigger: str) -> tuple[str, str]:
    txt = path.with_suffix(".txt")
    text, note = None, ""
    if txt.is_file():
        raw = txt.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text, note = raw.decode("latin-1"), "caption not UTF-8, read as Latin-1"
    elif path.name in meta:
        text = meta[path.name]
    if text is None or not text.strip():
        note = (
            "no caption: template caption used"
            if text is None
            else "empty caption: template caption used"
        )
        text = f"a photo of {TRIGGER_PLACEHOLDER}"
    return apply_trigger(text, trigger), note
