"""Clips in: frames chosen for the base's clip length and frame rate, streamed from the file.

A base trains on clips of ``frames`` frames at ``fps`` (cameo-tiny: 17 at 8 fps, about two
seconds). A phone clip is cut into evenly spaced windows of that length, each sampled at the
base's frame rate (a 6-second 30 fps MOV gives two windows of 17 frames, every 3.75th source
frame), so motion keeps its real speed; each window is one training item. A clip shorter than
a window gives one window of the longest 4k+1 frames it holds at that rate.

MOV/MP4/M4V/WebM/MKV/AVI are decoded with imageio's ffmpeg; GIFs with Pillow.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import imageio.v2 as imageio
import imageio_ffmpeg
import numpy as np
from PIL import Image, ImageSequence

from .images import UnreadableImage, to_rgb

MAX_WINDOWS = 8  # per clip, so that one long video does not outweigh the photos


@dataclass(frozen=True)
class ClipInfo:
    """What a clip holds: its frame count, frame rate and (width, height) as decoded."""

    frames: int
    fps: float
    size: tuple[int, int]


def clip_windows(
    n: int, src_fps: float, frames: int, fps: float, max_windows: int = MAX_WINDOWS
) -> list[list[int]]:
    """Source frame indices of each window: ``frames`` frames ``1/fps`` s apart, windows evenly
    spaced over the clip without sharing frames; one shorter window (4k+1 frames) when the
    clip is shorter than a window. ``src_fps`` unknown (<= 0): one source frame per step."""
    if n <= 0:
        return []
    step = (src_fps if src_fps and src_fps > 0 else fps) / fps  # source frames per base frame
    last = n - 1
    span = (frames - 1) * step  # source frames from a window's first frame to its last
    if span > last + 1e-9:
        count = (min(int(last / step + 1e-9) + 1, frames) - 1) // 4 * 4 + 1
        starts = [0.0]
    else:
        count, room = frames, last - span
        per = frames * step  # a window and one step: windows never share a frame
        k = min(max_windows, int(room / per + 1e-9) + 1)
        starts = [room / 2] if k == 1 else [room * i / (k - 1) for i in range(k)]
    return [[min(last, int(s + j * step + 0.5)) for j in range(count)] for s in starts]


def probe_clip(path: Path) -> ClipInfo:
    """Frame count, frame rate and size, without decoding the frames (ffmpeg stream copy)."""
    try:
        if path.suffix.lower() == ".gif":
            with Image.open(path) as im:
                n = getattr(im, "n_frames", 1)
                ms = [f.info.get("duration", 0) for f in ImageSequence.Iterator(im)]
                size = im.size
            mean = float(np.mean(ms)) if ms else 0.0
            return ClipInfo(n, 1000.0 / mean if mean > 0 else 0.0, size)
        with imageio.get_reader(path, format="FFMPEG") as r:
            meta = r.get_meta_data()
        n, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
        return ClipInfo(int(n), float(meta.get("fps") or 0.0), tuple(meta["size"]))
    except Exception as e:  # imageio, ffmpeg and Pillow raise many types for broken files
        raise UnreadableImage(f"not a readable clip ({e.__class__.__name__})") from e


def _raw_frames(path: Path) -> Iterator[np.ndarray | Image.Image]:
    if path.suffix.lower() == ".gif":
        with Image.open(path) as im:
            for frame in ImageSequence.Iterator(im):
                yield frame.convert("RGBA")
        return
    with imageio.get_reader(path, format="FFMPEG") as r:
        yield from r


def _prepare(frame: np.ndarray | Image.Image, max_side: int) -> Image.Image:
    img = to_rgb(frame if isinstance(frame, Image.Image) else Image.fromarray(frame))
    k = max(img.size) // max_side
    return img.reduce(k) if k >= 2 else img


def iter_windows(
    path: Path, windows: list[list[int]], max_side: int
) -> Iterator[list[Image.Image]]:
    """The frames of each window (RGB, longest side reduced towards ``max_side``), decoding the
    file once and holding one window at a time. Frames past the real end (a frame count that
    was an estimate) repeat the last frame. Raises :class:`UnreadableImage` when decoding fails."""
    needed = {i for w in windows for i in w}
    pending = list(windows)
    got: dict[int, Image.Image] = {}
    last: tuple[int, np.ndarray | Image.Image] | None = None
    try:
        for i, frame in enumerate(_raw_frames(Path(path))):
            last = (i, frame)
            if i in needed:
                got[i] = _prepare(frame, max_side)
            while pending and max(pending[0]) <= i:
                yield [got[j] for j in pending.pop(0)]
                keep = {j for w in pending for j in w}
                got = {j: v for j, v in got.items() if j in keep}
            if not pending:
                return
    except UnreadableImage:
        raise
    except Exception as e:  # broken streams raise many types
        raise UnreadableImage(f"not a readable clip ({e.__class__.__name__})") from e
    if last is None:
        raise UnreadableImage("not a readable clip (no frames)")
    end = got[last[0]] if last[0] in got else _prepare(last[1], max_side)
    for w in pending:
        yield [got.get(j, end) for j in w]
