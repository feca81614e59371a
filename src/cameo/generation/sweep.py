"""``cameo sweep``: the same prompt and seed at several LoRA scales, side by side, with metrics.

Scale 0 is the base model; 1 is the LoRA as trained; above 1 exaggerates it. The grid video
puts the scales left to right, so where the person appears and where the prompt is lost can be
seen, and the metrics say it in numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..data.media import save_clip_outputs
from ..lora_files import read_metadata
from ..metrics.evaluate import Eyes, load_references, score_clip
from ..metrics.scores import self_similarity
from .config import GenerateConfig
from .sampling import generate_frames, load_for


def run_sweep(
    lora: Path,
    scales: list[float],
    out: Path,
    *,
    prompt: str | None = None,
    photos: Path | None = None,
    base: str | None = None,
    seed: int = 0,
    overwrite: bool = False,
    device: str = "auto",
    dtype: str = "auto",
    fp8_base: bool = False,
    offload: str = "auto",
) -> dict:
    """Render ``prompt`` (default: the LoRA's trigger speaking) at each of ``scales`` into a
    grid video in ``out``, scored against ``photos`` when given. ``device``, ``dtype``,
    ``fp8_base``, ``offload``: where the model runs, as ``GenerateConfig`` reads them."""

    if not scales:
        raise ValueError("no scales given")
    out = Path(out)
    if (out / "grid.mp4").exists() and not overwrite:
        raise FileExistsError(f"{out / 'grid.mp4'} exists")
    trigger = read_metadata(lora).get("cameo.trigger", "")
    prompt = prompt or f"{trigger or 'a person'}, speaking, in front of a blue wall"
    where = GenerateConfig(
        prompt=prompt,
        base=base or "cameo-tiny",
        lora=[str(lora)],
        device=device,
        dtype=dtype,
        fp8_base=fp8_base,
        offload=offload,
    )
    pipe, loaded = load_for(where)
    names = loaded.names
    eyes, refs, self_sim = _eyes_and_refs(photos)
    clips, rows = [], []
    for s in scales:
        pipe.set_adapters(names, [s])
        frames = generate_frames(pipe, GenerateConfig(prompt=prompt, seed=seed))
        clips.append(frames)
        row: dict = {"scale": s}
        if eyes is not None:
            p = score_clip(eyes, frames, prompt, refs, self_sim)["people"][0]
            row.update(
                {k: p.get(k) for k in ("identity_normalised", "identified", "prompt_fidelity")}
            )
        rows.append(row)
        print(
            "  "
            + ", ".join(
                f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()
            )
        )
    gap = np.full((clips[0].shape[0], clips[0].shape[1], 2, 3), 255, np.uint8)
    grid = np.concatenate([x for c in clips for x in (c, gap)][:-1], axis=2)  # (F, H, n*W, 3)
    save_clip_outputs(
        grid,
        out / "grid.mp4",
        overwrite=True,
        meta={"prompt": prompt, "seed": seed, "scales": scales},
    )
    report = {"lora": str(lora), "prompt": prompt, "seed": seed, "rows": rows}
    (out / "sweep.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"grid (scales left to right: {scales}) in {out}/grid.mp4, .gif, .png")
    return report


def _eyes_and_refs(photos: Path | None):
    if photos is None:
        return None, None, None

    eyes = Eyes()
    refs = eyes.embed(load_references(photos))
    return eyes, refs, self_similarity(refs)
