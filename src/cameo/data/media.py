"""Writing clips: MP4 (imageio-ffmpeg's bundled ffmpeg), GIF and a PNG contact sheet.

Every file is written under a temporary name and renamed into place, so an interrupted write
never leaves a half file under the final name, and nothing existing is replaced unless asked.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
from PIL import Image


def _check_free(paths: list[Path], overwrite: bool) -> None:
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"would overwrite {', '.join(existing)}")


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")


def contact_sheet(frames: np.ndarray, columns: int = 9, scale: int = 2) -> Image.Image:
    """Frames (F, H, W, 3) tiled left to right, top to bottom, enlarged ``scale`` times."""
    f, h, w, _ = frames.shape
    cols = min(columns, f)
    rows = -(-f // cols)
    sheet = np.full((rows * h, cols * w, 3), 255, np.uint8)
    for i, fr in enumerate(frames):
        r, c = divmod(i, cols)
        sheet[r * h : (r + 1) * h, c * w : (c + 1) * w] = fr
    img = Image.fromarray(sheet)
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST)


def write_mp4(frames: np.ndarray, path: Path, fps: int) -> None:

    # Upscale 4x so players show the small clip at a viewable size; yuv420p for compatibility.
    big = frames.repeat(4, axis=1).repeat(4, axis=2)
    # Codecs want sides in multiples of 16: pad with white (as the contact sheets are) rather
    # than let imageio resize, and warn, for side-by-side strips such as the demo's overview.
    pad_h, pad_w = -big.shape[1] % 16, -big.shape[2] % 16
    if pad_h or pad_w:
        big = np.pad(big, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), constant_values=255)
    tmp = _tmp(path)
    try:
        with imageio.get_writer(
            tmp,
            format="FFMPEG",
            fps=fps,
            codec="libx264",
            quality=9,
            pixelformat="yuv420p",
            macro_block_size=16,
        ) as w:
            for fr in big:
                w.append_data(fr)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_gif(frames: np.ndarray, path: Path, fps: int) -> None:
    imgs = [
        Image.fromarray(f).resize((f.shape[1] * 3, f.shape[0] * 3), Image.NEAREST) for f in frames
    ]
    tmp = _tmp(path)
    try:
        imgs[0].save(
            tmp,
            format="GIF",
            save_all=True,
            append_images=imgs[1:],
            duration=int(1000 / fps),
            loop=0,
        )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_png(img: Image.Image, path: Path) -> None:
    tmp = _tmp(path)
    try:
        img.save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_clip_outputs(
    frames: np.ndarray, mp4: Path, fps: int = 8, overwrite: bool = False, meta: dict | None = None
) -> list[Path]:
    """Write ``mp4`` plus ``.gif``, ``.png`` (contact sheet) and ``.json`` (settings) beside it."""
    mp4 = Path(mp4)
    if mp4.suffix.lower() != ".mp4":
        mp4 = mp4.with_suffix(".mp4")
    paths = [mp4, mp4.with_suffix(".gif"), mp4.with_suffix(".png"), mp4.with_suffix(".json")]
    _check_free(paths, overwrite)
    mp4.parent.mkdir(parents=True, exist_ok=True)
    write_mp4(frames, paths[0], fps)
    write_gif(frames, paths[1], fps)
    write_png(contact_sheet(frames), paths[2])
    paths[3].write_text(json.dumps(meta or {}, indent=2) + "\n")
    return paths
