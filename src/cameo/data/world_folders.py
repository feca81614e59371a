"""Photo folders and clips of world people, written exactly as a user would bring them."""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image

from ..world import person_sample
from .captions import TRIGGER_PLACEHOLDER
from .media import save_clip_outputs, write_mp4


def _ensure_empty_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} is not empty")
    out.mkdir(parents=True, exist_ok=True)


CAPTION_STYLES = ("named", "described")


def write_person_folder(
    seed: int,
    out: Path,
    count: int = 20,
    *,
    overwrite: bool = False,
    size: int = 64,
    captions: str = "named",
    clips: int = 0,
    frames: int = 17,
) -> Path:
    """Held-out person ``seed``: ``count`` PNG photos in varied scenes, each with a same-name
    ``.txt`` caption, plus ``truth.json`` (the traits and scenes, for measurement only).

    ``captions="named"`` writes what a LoRA caption should say: ``[trigger]`` where the person
    is, and only what varies (action, expression, clothes, hat, background), so the trigger
    must carry the person's look. ``"described"`` also spells out their traits (hair, glasses,
    ...), as many users caption; then the text explains the look and the trigger learns less.
    ``clips``: also that many captioned MP4 clips of ``frames`` frames (the motion an
    image-to-video LoRA learns from), ``clip_000.mp4`` and so on."""
    if count < 1:
        raise ValueError("--count must be at least 1")
    if captions not in CAPTION_STYLES:
        raise ValueError(f"--captions must be one of {', '.join(CAPTION_STYLES)}, not {captions!r}")
    called = TRIGGER_PLACEHOLDER if captions == "named" else None
    out = Path(out)
    _ensure_empty_dir(out, overwrite)
    truth = []
    for i in range(count):
        rng = random.Random(f"cameo-world/photos/{seed}/{i}")
        s = person_sample("heldout", seed, rng, frames=1, size=size, called=called)
        name = f"photo_{i:03d}"
        Image.fromarray(s.frames[0]).save(out / f"{name}.png")
        (out / f"{name}.txt").write_text(s.caption + "\n")
        truth.append({"file": f"{name}.png", **s.meta()})
    moving = []
    for i in range(clips):
        rng = random.Random(f"cameo-world/clips/{seed}/{i}")
        s = person_sample("heldout", seed, rng, frames=frames, size=size, called=called)
        name = f"clip_{i:03d}"
        write_mp4(s.frames, out / f"{name}.mp4", fps=8)
        (out / f"{name}.txt").write_text(s.caption + "\n")
        moving.append({"file": f"{name}.mp4", **s.meta()})
    record = {"split": "heldout", "index": seed, "photos": truth}
    (out / "truth.json").write_text(json.dumps({**record, "clips": moving}, indent=1))
    return out


def write_person_clip(
    seed: int,
    out: Path,
    *,
    frames: int = 17,
    scene_seed: int = 0,
    overwrite: bool = False,
    size: int = 64,
) -> list[Path]:
    """Held-out person ``seed`` in scene ``scene_seed``: MP4, GIF, PNG sheet, caption .txt."""
    if frames < 1 or (frames - 1) % 4:
        raise ValueError(f"--frames must be 4k+1, not {frames}")
    rng = random.Random(f"cameo-world/clips/{seed}/{scene_seed}")
    s = person_sample("heldout", seed, rng, frames=frames, size=size)
    paths = save_clip_outputs(s.frames, Path(out), overwrite=overwrite, meta=s.meta())
    txt = paths[0].with_suffix(".txt")
    txt.write_text(s.caption + "\n")
    return [*paths, txt]
