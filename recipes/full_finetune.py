"""Full fine-tuning: every weight of the transformer trains on a person's photos, with the LoRA
run's data, objective and schedule, so the study can set it beside LoRA. Writes
``OUT/transformer`` (diffusers layout).

    python recipes/full_finetune.py --data photos/ --trigger mike --out runs/full --lr 1e-4

The batches, the flow-matching loss and its prior preservation are ``cameo train``'s (the base
the prior is kept against is a frozen copy of the transformer, since there is no adapter to
switch off); the steps run under cameo's optimisation loop, which checkpoints the transformer,
the optimiser and the RNG every ``--checkpoint-every`` steps in ``OUT/checkpoints``. ``--resume``
continues from the newest checkpoint and ends with the weights an unbroken run ends with.
"""

from __future__ import annotations

import argparse
import copy
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from cameo.cli.args import EXIT_INTERRUPTED, add_dataclass_args, dataclass_from_args
from cameo.data import scan_folder
from cameo.models import load_pipeline
from cameo.training import PER_INVOCATION, TrainConfig, TrainingInterrupted
from cameo.training import checkpoint as ckpt
from cameo.training.cache import build_cache
from cameo.training.config import resolve_from_base
from cameo.training.loop import Checkpointed, Events, OptimisationLoop, Schedule, stop_on_sigint
from cameo.training.objective import make_batch, training_loss

# TrainConfig's options that full fine-tuning does not read (the adapter's, the fast path's,
# validation and logging); they are not offered as flags.
UNUSED = (
    "lora", "rank", "alpha", "targets", "ffn", "rslora", "expert", "orthogonal_slot", "orthogonal_seed",
    "ema", "grad_checkpointing", "mixed_precision", "fast", "threads", "validate_every",
    "early_stop", "init_from", "log_with", "overwrite",
)  # fmt: skip


def run_settings(cfg: TrainConfig) -> dict:
    """What shapes the weights: a checkpoint resumes only under the same settings."""
    return {k: v for k, v in asdict(cfg).items() if k not in (*PER_INVOCATION, *UNUSED)}


def full_finetune(cfg: TrainConfig, resume: bool = False, events: Events | None = None) -> Path:
    """Fine-tune every transformer weight of ``cfg.base`` on ``cfg.data``; returns the folder
    the transformer is written to. ``events`` listen to the loop (an ``on_step`` that returns
    True ends the run there, as finished). Raises ``TrainingInterrupted`` when stopped by
    Ctrl+C, after a checkpoint."""
    resolve_from_base(cfg)
    cfg.validate()
    out = Path(cfg.out)
    torch.manual_seed(cfg.seed)
    pipe = load_pipeline(cfg.base)
    report = scan_folder(
        Path(cfg.data), cfg.trigger, height=cfg.height, width=cfg.width, min_usable=cfg.min_photos
    )
    cache = build_cache(pipe, report, cfg)
    teacher = copy.deepcopy(pipe.transformer).eval().requires_grad_(False)
    model = pipe.transformer.train().requires_grad_(True)
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def step(s: int) -> dict[str, torch.Tensor]:
        loss = training_loss(model, make_batch(cache, cfg, s), cfg, teacher=teacher)
        loss.backward()
        return {"loss": loss.detach()}

    def restore(tensors: dict[str, torch.Tensor], state: dict) -> None:
        if state.get("settings") != run_settings(cfg):
            raise ValueError(
                f"the checkpoint in {out / 'checkpoints'} was made with other settings; "
                "delete it or pass those settings"
            )
        model.load_state_dict(tensors)  # in place: the optimiser keeps its parameters

    loop = OptimisationLoop(
        opt,
        params,
        step,
        total_steps=cfg.steps,
        schedule=Schedule(cfg.lr, cfg.warmup, cfg.schedule),
        checkpoint=Checkpointed(
            root=out / "checkpoints",
            tensors=model.state_dict,
            restore=restore,
            state=lambda: {"settings": run_settings(cfg)},
        ),
        checkpoint_every=cfg.checkpoint_every,
        max_grad_norm=1.0,
        events=events,
        name=f"full fine-tuning {cfg.name}",
    )
    if resume:
        if ckpt.latest(out / "checkpoints") is None:
            raise FileNotFoundError(f"--resume: no complete checkpoint in {out / 'checkpoints'}")
        loop.resume()
    with stop_on_sigint(loop):
        result = loop.run()
    if result.reason == "stopped":
        raise TrainingInterrupted(
            f"stopped at step {result.step}; checkpoint saved, continue with --resume"
        )
    model.eval().save_pretrained(out / "transformer", safe_serialization=True)
    return out / "transformer"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python recipes/full_finetune.py",
        description="Fine-tune every transformer weight on a person's photos.",
    )
    add_dataclass_args(parser, TrainConfig, skip=UNUSED)
    parser.add_argument(
        "--resume", action="store_true", help="continue from the newest checkpoint in --out"
    )
    args = parser.parse_args(argv)
    cfg = dataclass_from_args(TrainConfig, args)
    try:
        cfg.validate()
    except ValueError as e:
        parser.error(str(e))
    try:
        path = full_finetune(cfg, resume=args.resume)
    except TrainingInterrupted as e:
        print(e, file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"transformer written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
