"""``cameo train``, ``estimate``, ``pretrain`` and ``model``: cloning a person, predicting what a
run costs, and making and shipping the built-in model."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from ..data import DatasetError
from ..estimate import advise, estimate, to_json
from ..lora import DEFAULT_TARGETS, LoraSpec
from ..models import resolve_base, tiny_model_dir
from ..models.profiles import detect_profile
from ..pretrain import PER_INVOCATION as PRETRAIN_PER_INVOCATION
from ..pretrain import (
    PretrainConfig,
    PretrainSetupError,
    check_warm_start,
    export_model,
    resolve_architecture,
    run_pretrain,
    shipped_dir,
)
from ..training import PER_INVOCATION, TrainConfig, TrainingInterrupted, run_training
from ..training.config import LORA_FIELDS, PRIOR_SOURCES
from .args import (
    EXIT_DIVERGED,
    EXIT_INTERRUPTED,
    EXIT_REFUSED,
    UserError,
    add_dataclass_args,
    dataclass_from_args,
    given_on_command_line,
    restore_run_settings,
)


def cmd_train(args: argparse.Namespace) -> int:
    try:
        if args.config:
            names = {f.name for f in dataclasses.fields(TrainConfig)} | set(LORA_FIELDS)
            given = given_on_command_line(args)
            overrides = {k: v for k, v in given.items() if k in names}
            cfg = TrainConfig.from_toml(Path(args.config), **overrides)
        else:
            cfg = dataclass_from_args(TrainConfig, args)
            if args.resume:
                restore_run_settings(cfg, args, PER_INVOCATION)
        run_training(cfg, resume=args.resume)
    except TrainingInterrupted as e:
        print(f"cameo train: {e}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except FloatingPointError as e:
        print(f"cameo train: {e}", file=sys.stderr)
        return EXIT_DIVERGED
    except (ValueError, DatasetError) as e:
        raise UserError(str(e)) from e
    return 0


def cmd_estimate(args: argparse.Namespace) -> int:
    spec = LoraSpec(rank=args.rank, alpha=args.rank, targets=args.targets, ffn=args.ffn)
    base = resolve_base(args.base)
    profile = detect_profile(base)  # what `cameo train --base` would start from
    gpu_run = profile.mixed_precision != "no"
    settings = dict(
        spec=spec,
        batch=args.batch or profile.batch,
        frames=args.frames or profile.frames,
        height=args.height or profile.height,
        width=args.width or profile.width,
        precision=args.precision or (profile.mixed_precision if gpu_run else "fp32"),
        grad_checkpointing=profile.grad_checkpointing
        if args.grad_checkpointing is None
        else args.grad_checkpointing,
        fused_attention=args.fused_attention,
        matmul_tflops=args.tflops,
        prior_preservation=args.prior_preservation > 0,
        prior_source=args.prior_source,
        fp8=args.fp8_base,
        offload=args.offload,
        previews=args.previews,
    )
    try:
        spec.validate()
        if args.gpu_memory:
            advice = advise(base, args.gpu_memory, **settings)
            print(
                to_json(advice) if args.json else f"{advice.estimate.format()}\n{advice.format()}"
            )
            return 0
        e = estimate(base, **settings)
    except ValueError as e:
        raise UserError(str(e)) from e
    print(to_json(e) if args.json else e.format())
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    cfg = dataclass_from_args(PretrainConfig, args)
    try:
        if args.resume:
            restore_run_settings(cfg, args, PRETRAIN_PER_INVOCATION)
        resolve_architecture(cfg, args.resume)
        cfg.validate()
        check_warm_start(cfg)
    except ValueError as e:
        raise UserError(str(e)) from e
    try:
        out = run_pretrain(cfg, resume=args.resume)
    except FileExistsError as e:
        print(f"cameo pretrain: {e}", file=sys.stderr)
        return EXIT_REFUSED
    except PretrainSetupError as e:  # a missing stage to refine, a mismatched denoiser
        raise UserError(str(e)) from e
    if out is not None:
        print(f"pipeline written to {out}")
    return 0


def cmd_model_export(args: argparse.Namespace) -> int:
    dest = Path(args.to) if args.to else shipped_dir(Path(args.run))
    print(f"exported to {export_model(Path(args.run), dest, args.notes, args.overwrite)}")
    return 0


def cmd_model_path(args: argparse.Namespace) -> int:
    print(tiny_model_dir(args.name))
    return 0


def add_parsers(sub) -> None:
    """train, pretrain, estimate and model."""
    t = sub.add_parser(
        "train", help="clone a person: train a LoRA from a folder of captioned photos"
    )
    t.add_argument(
        "--config", default=None, help="TOML file with these settings (flags given here win)"
    )
    add_dataclass_args(t, TrainConfig)
    t.add_argument(
        "--resume", action="store_true", help="continue from the last checkpoint in --out"
    )
    t.set_defaults(func=cmd_train)

    pt = sub.add_parser("pretrain", help="train the built-in model cameo-tiny from the world")
    add_dataclass_args(pt, PretrainConfig)
    pt.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last checkpoint, with the run's own settings "
        "(its config.json) for every option this command line does not give",
    )
    pt.set_defaults(func=cmd_pretrain)
    _add_estimate_parser(sub)
    _add_model_parser(sub)


def _add_estimate_parser(sub) -> None:
    es = sub.add_parser(
        "estimate",
        help="predict the GPU memory (phase by phase) and time per step of a training run, and "
        "whether it fits a card",
    )
    es.add_argument("--base", default=None, help="base model directory (default: cameo-tiny)")
    es.add_argument("--rank", type=int, default=16, help="LoRA rank")
    es.add_argument("--targets", default=DEFAULT_TARGETS, help="adapted modules")
    es.add_argument("--ffn", action="store_true", help="also adapt the feed-forward layers")
    size = "(default: the base's training profile, as cameo train)"
    es.add_argument("--batch", type=int, default=None, help=f"batch size {size}")
    es.add_argument("--frames", type=int, default=None, help=f"frames per sample {size}")
    es.add_argument("--height", type=int, default=None, help=f"height in pixels {size}")
    es.add_argument("--width", type=int, default=None, help=f"width in pixels {size}")
    es.add_argument(
        "--precision",
        choices=["fp32", "bf16", "fp16"],
        default=None,
        help="weight/activation precision (default: bf16 for Wan on a GPU, fp32 for cameo-tiny)",
    )
    es.add_argument(
        "--grad-checkpointing",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"recompute activations in backward {size}",
    )
    es.add_argument(
        "--fused-attention",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="attention by a fused kernel, keeping no score matrix (torch picks one on GPUs "
        "and CPUs alike; default: on)",
    )
    es.add_argument(
        "--fp8-base", action="store_true", help="frozen transformer weights stored in float8"
    )
    es.add_argument(
        "--offload",
        choices=["none", "block", "leaf"],
        default="none",
        help="frozen weights (and the text encoder) rest on the CPU, streamed in block by block "
        "or layer by layer (default: none)",
    )
    es.add_argument(
        "--previews",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="count validation previews (text encoder and VAE back on the GPU; default: on, as "
        "cameo train validates)",
    )
    es.add_argument(
        "--gpu-memory",
        type=float,
        default=None,
        metavar="GB",
        help="a card's memory: says whether the run fits, and which settings would make it fit",
    )
    es.add_argument(
        "--tflops",
        type=float,
        default=None,
        help="sustained matmul TFLOP/s (default: measured here)",
    )
    es.add_argument(
        "--prior-preservation",
        type=float,
        default=TrainConfig.prior_preservation,
        help="weight of the prior-preservation term, as in cameo train (0 = off; default: "
        f"{TrainConfig.prior_preservation})",
    )
    es.add_argument(
        "--prior-source",
        choices=PRIOR_SOURCES,
        default=TrainConfig.prior_source,
        help="as in cameo train: photos (the base's prediction, one more forward per step) or "
        f"generated (class samples made before training) (default: {TrainConfig.prior_source})",
    )
    es.add_argument("--json", action="store_true", help="print JSON")
    es.set_defaults(func=cmd_estimate)


def _add_model_parser(sub) -> None:
    m = sub.add_parser("model", help="the built-in model")
    msub = m.add_subparsers(dest="model_command", required=True)
    mp = msub.add_parser(
        "path",
        help="print a built-in model's directory (loadable with WanPipeline, or for "
        "cameo-tiny-i2v WanImageToVideoPipeline, .from_pretrained)",
    )
    mp.add_argument(
        "name", nargs="?", default="cameo-tiny", choices=["cameo-tiny", "cameo-tiny-i2v"]
    )
    mp.set_defaults(func=cmd_model_path)
    mx = msub.add_parser(
        "export", help="copy a finished pretraining run's pipeline here, with its model card"
    )
    mx.add_argument("--run", default="runs/pretrain", help="the pretraining run folder")
    mx.add_argument(
        "--to",
        default=None,
        help="destination (default: the package's cameo-tiny, or cameo-tiny-i2v for a "
        "--task i2v run)",
    )
    mx.add_argument("--notes", default="", help="text added to the model card")
    mx.add_argument("--overwrite", action="store_true", help="replace the model in --to")
    mx.set_defaults(func=cmd_model_export)
