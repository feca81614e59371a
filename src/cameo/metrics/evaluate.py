"""``cameo eval``'s reports: a folder of clips, or a LoRA generating with and without itself,
measured by one judge (the world eyes or the face descriptor, :mod:`cameo.metrics.judges`).

Every report says which judge measured it (``identity_judge``). Records keep one shape for
both judges: per clip a ``people`` list (one entry per person region), each entry with
``identity_normalised``, the judge's normalised identity score.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from PIL import Image

from ..data.images import IMAGE_EXT, open_image
from ..data.media import save_clip_outputs
from ..generation import GenerateConfig, generate_frames
from ..generation.sampling import load_for
from ..lora_files import read_metadata
from ..models.first_frame import is_image_to_video
from .face_identity import read_photos
from .judges import Judge, is_tiny_base, make_judge, resolve_identity
from .prompts import default_prompts, fill_trigger, prompts_for_base
from .sees import PersonSees, format_sees
from .world_identity import (
    Eyes,
    WorldJudge,
    load_references,
    score_clip,
    summarise,
    to_model_size,
)

__all__ = [
    "Eyes",
    "default_prompts",
    "eval_clip_folder",
    "eval_lora",
    "format_lora_table",
    "format_table",
    "load_frames",
    "load_references",
    "score_clip",
    "summarise",
    "to_model_size",
]

VIDEO_EXT = (".mp4", ".webm", ".mov", ".gif")  # preferred first when a clip has several
STILL_MAX_SIDE = 4096  # a still is reduced while decoding only beyond twice this side
REAL_SIZE = (480, 832)  # (height, width) generated on a real base when the LoRA names none


def load_frames(path: Path) -> np.ndarray:
    """A clip (mp4/gif/webm) or an image as uint8 (F, H, W, 3); an image decoded as training
    decodes photos (:func:`cameo.data.open_image`: upright, any format and mode)."""
    if path.suffix.lower() in IMAGE_EXT:
        return np.asarray(open_image(Path(path), STILL_MAX_SIDE).image)[None]
    arr = iio.imread(path, index=None)
    if arr.ndim == 3:
        arr = arr[None]
    return arr[..., :3]


def prompt_for(path: Path) -> str:
    """A clip's prompt: a same-name .txt, or the 'prompt'/'caption' of a same-name .json."""
    txt, js = path.with_suffix(".txt"), path.with_suffix(".json")
    if txt.is_file():
        return txt.read_text(errors="replace").strip()
    if js.is_file():
        try:
            meta = json.loads(js.read_text())
            return str(meta.get("prompt") or meta.get("caption") or "")
        except json.JSONDecodeError:
            return ""
    return ""


def _judge(
    eyes: Eyes | None, identity: str, photos: Path | None, *, base=None, clips: bool = False
) -> Judge:
    """The judge ``identity`` resolves to; ``eyes`` with a custom encoder count as asked for."""
    encoder = eyes is not None and eyes.external is not None
    name = resolve_identity(identity, base=base, photos=photos, encoder=encoder, clips=clips)
    return make_judge(name, photos, eyes)


def eval_clip_folder(
    eyes: Eyes | None, clips_dir: Path, photos: Path | None, *, identity: str = "auto"
) -> dict:
    """Score every clip in a folder (made by cameo or elsewhere) against optional references.

    ``identity``: ``world``, ``face`` or ``auto`` (:mod:`cameo.metrics.judges`); ``eyes`` are
    the world eyes to use (loaded when needed and not given).
    """
    files = [p for p in Path(clips_dir).iterdir() if p.suffix.lower() in VIDEO_EXT]
    if not files:
        raise FileNotFoundError(f"no clips (mp4/gif/webm/mov) in {clips_dir}")
    judge = _judge(eyes, identity, photos, clips=True)
    # The same clip is often written as both .mp4 and .gif: score each stem once, from the
    # MP4 where there is one (a GIF keeps 256 colours).
    files.sort(key=lambda p: (p.stem, VIDEO_EXT.index(p.suffix.lower())))
    seen, results = set(), []
    for f in files:
        if f.stem in seen:
            continue
        seen.add(f.stem)
        rec = judge.score(load_frames(f), prompt_for(f))
        rec["file"] = f.name
        results.append(rec)
    return {
        "identity_judge": judge.name,
        **judge.report_fields(),
        "summary": judge.summarise(results),
        "clips": results,
    }


def _num(value: object, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _rows_to_text(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]


def format_table(report: dict) -> str:
    """A plain-text table of a report's per-clip metrics and its summary."""
    face = report.get("identity_judge") == "face"
    if face:
        rows = [("clip", "face found", "same person", "distance", "similarity (norm.)")]
    else:
        rows = [("clip", "region", "identity", "ident.", "fidelity", "temporal")]
    for c in report["clips"]:
        for p in c["people"]:
            name = str(c.get("file", c["prompt"][:40]))
            if face:
                rows.append(
                    (
                        name,
                        _num(p["face_found"], ".2f"),
                        _num(p.get("same_person"), ".2f"),
                        _num(p.get("distance"), ".3f"),
                        _num(p.get("similarity_normalised"), ".3f"),
                    )
                )
                continue
            rows.append(
                (
                    name,
                    p["region"],
                    _num(p.get("identity_normalised"), ".3f"),
                    ("yes" if p["identified"] else "no") if "identified" in p else "-",
                    _num(p["prompt_fidelity"], ".2f"),
                    _num(p["temporal_consistency"], ".3f"),
                )
            )
    lines = _rows_to_text(rows)
    s = {k: v for k, v in report["summary"].items() if k != "identity_judge"}
    lines.append(
        f"summary ({report.get('identity_judge', 'world')} judge): "
        + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in s.items())
    )
    if face:
        lines.append(f"prompt fidelity: {report['prompt_fidelity_note']}")
    return "\n".join(lines)


# ------------------------------------------------------------------------- LoRA evaluation


def read_lora_trigger(path: Path) -> str | None:
    """The trigger word a cameo LoRA file names in its metadata."""
    return read_metadata(path).get("cameo.trigger")


def sample_size(lora: Path, tiny: bool) -> tuple[int, int]:
    """(height, width) to generate at: 64x64 on cameo-tiny; on a real base the LoRA's
    training size (its ``cameo.config``), else ``REAL_SIZE``."""
    if tiny:
        return (64, 64)
    try:
        cfg = json.loads(read_metadata(lora).get("cameo.config", "{}"))
    except json.JSONDecodeError:
        cfg = {}
    for scope in [cfg, *(v for v in cfg.values() if isinstance(v, dict))]:
        if isinstance(scope.get("height"), int) and isinstance(scope.get("width"), int):
            return (scope["height"], scope["width"])
    return REAL_SIZE


def start_images(folder: Path) -> list[tuple[str, Image.Image]]:
    """(name, image) of every photo in ``folder``, by name: the first frames an image-to-video
    evaluation starts its clips from."""
    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_EXT)
    if not paths:
        raise ValueError(f"{folder}: no photos to start image-to-video clips from")
    return [(p.name, open_image(p, STILL_MAX_SIDE).image) for p in paths]


def eval_lora(
    eyes: Eyes | None,
    lora: Path,
    photos: Path,
    *,
    base: str | None = None,
    trigger: str | None = None,
    prompts: dict[str, list[str]] | None = None,
    seeds: int = 2,
    scale: float = 1.0,
    save_clips: Path | None = None,
    identity: str = "auto",
    device: str = "cpu",
    dtype: str = "auto",
    first_frames: Path | None = None,
    second_judge: bool = True,
) -> dict:
    """Generate every prompt x seed with the LoRA and with the base model, and score both:
    identity (and, with the world judge, prompt fidelity) on prompts naming the subject,
    leakage on prompts that do not; and on the subject's clips what a person sees
    (:mod:`cameo.metrics.sees`: sharpness, visible speech and, on cameo-tiny with
    ``second_judge`` and the faces extra, dlib's face descriptor in a line-up), in the
    summary's ``sees``.

    ``prompts``: groups ``subject`` and ``others`` (``[trigger]`` is filled in); the base's
    defaults otherwise (:mod:`cameo.metrics.prompts`). ``identity``: ``world``, ``face`` or
    ``auto`` (world on cameo-tiny, face on any other base). ``device``/``dtype``: where and in
    what precision the base runs (``auto``: CUDA when present; bf16 there for Wan).

    On an image-to-video base every clip starts from a given first frame: the images in
    ``first_frames`` (default: ``photos``), taken in turn; the judge scores the frames the
    model drew, after the given one. A folder of someone else's photos asks whether the LoRA
    holds the face or the first frame wins.
    """
    trigger = trigger or read_lora_trigger(lora)
    if not trigger:
        raise ValueError("the LoRA file names no trigger word; pass --trigger")
    tiny = is_tiny_base(base)
    if prompts:
        prompts = {group: fill_trigger(plist, trigger) for group, plist in prompts.items()}
    else:
        prompts = prompts_for_base(trigger, tiny)
    judge = _judge(eyes, identity, photos, base=base)
    height, width = sample_size(lora, tiny)
    sees = PersonSees(
        judge.name,
        read_photos(photos)[1],
        eyes=judge.eyes if isinstance(judge, WorldJudge) else None,
        second_judge=second_judge and tiny,
    )

    where = GenerateConfig(prompt="-", base=base or "cameo-tiny", device=device, dtype=dtype)
    pipe, _ = load_for(replace(where, lora=[f"{lora}:{scale}"]))
    starts = start_images(first_frames or photos) if is_image_to_video(pipe) else []
    results: dict[str, dict[str, list]] = {}
    for group, plist in prompts.items():
        for variant in ("lora", "base"):
            (pipe.enable_lora if variant == "lora" else pipe.disable_lora)()
            recs = []
            for pi, prompt in enumerate(plist):
                for seed in range(seeds):
                    wide = tiny and "two people" in prompt
                    cfg = GenerateConfig(
                        prompt=prompt, seed=seed, height=height, width=2 * width if wide else width
                    )
                    start = starts[(pi * seeds + seed) % len(starts)] if starts else None
                    frames = generate_frames(pipe, cfg, image=start and start[1])
                    judged = frames[1:] if start else frames
                    rec = judge.score(judged, prompt)
                    rec["seed"] = seed
                    if group == "subject":
                        rec["sees"] = sees.clip(judged, prompt)
                    if start:
                        rec["first_frame"] = start[0]
                    recs.append(rec)
                    if save_clips is not None:
                        save_clip_outputs(
                            frames,
                            save_clips / f"{group}-{variant}-{pi:02d}-s{seed}.mp4",
                            overwrite=True,
                            meta={"prompt": prompt},
                        )
            results.setdefault(group, {})[variant] = recs
    pipe.enable_lora()
    summary: dict[str, object] = {
        g: {v: judge.summarise(r) for v, r in d.items()} for g, d in results.items()
    }
    if "others" in summary:
        summary.update(judge.leakage(summary["others"]["lora"], summary["others"]["base"]))
    if "subject" in results:
        subject = results["subject"]
        summary["sees"] = sees.summarise(
            [r["sees"] for r in subject["lora"]], [r["sees"] for r in subject["base"]]
        )
    return {
        "lora": str(lora),
        "trigger": trigger,
        "scale": scale,
        "seeds": seeds,
        "identity_judge": judge.name,
        **judge.report_fields(),
        **({"first_frames": str(first_frames or photos)} if starts else {}),
        "summary": summary,
        "clips": results,
    }


def format_lora_table(report: dict) -> str:
    """A plain-text table of a LoRA report: each prompt group with and without the LoRA."""
    face = report.get("identity_judge") == "face"
    if face:
        rows = [("prompts", "model", "similarity (norm.)", "same person", "face found")]
        keys = (("similarity_normalised", ".3f"), ("same_person", ".2f"), ("face_found", ".2f"))
    else:
        rows = [("prompts", "model", "identity (norm.)", "identified", "prompt fidelity")]
        keys = (
            ("identity_normalised", ".3f"),
            ("identification_rate", ".2f"),
            ("prompt_fidelity", ".2f"),
        )
    for group, d in report["summary"].items():
        if not isinstance(d, dict) or group == "sees":
            continue
        for variant, s in d.items():
            rows.append((group, variant, *(_num(s.get(k), f) for k, f in keys)))
    lines = _rows_to_text(rows)
    leak = report["summary"].get("leakage")
    if leak is not None and face:
        s = report["summary"]
        lines.append(
            f"leakage (frames on prompts not naming {report['trigger']} where the face judge sees "
            f"{report['trigger']}, LoRA - base): {leak:+.3f} "
            f"(LoRA {s['leakage_lora']:.2f}, base {s['leakage_base']:.2f})"
        )
    elif leak is not None:
        lines.append(
            f"leakage (identity on prompts not naming {report['trigger']}, LoRA - base): "
            f"{leak:+.3f}"
        )
    if face:
        lines.append(f"prompt fidelity: {report['prompt_fidelity_note']}")
    if "sees" in report["summary"]:
        lines += format_sees(report["summary"]["sees"])
    return "\n".join(lines)
