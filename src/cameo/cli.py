"""The ``cameo`` command line: thin commands that parse arguments and call the library.

User mistakes (bad paths, bad values, existing outputs) end with a one-line message and a
non-zero exit code, never a traceback. Exit codes: 0 ok, 2 usage or input error, 3 refused
(would overwrite, nothing to do), 4 training diverged (NaN/Inf), 5 disk full, 130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import sys
from pathlib import Path
from typing import Any

EXIT_USAGE, EXIT_REFUSED, EXIT_DIVERGED, EXIT_DISK, EXIT_INTERRUPTED = 2, 3, 4, 5, 130


class UserError(Exception):
    """A problem the user can fix; printed without a traceback."""


def add_dataclass_args(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    """One ``--flag`` per scalar dataclass field, its help text taken from the field metadata."""
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        if f.name in skip:
            continue
        if f.name in ("region", "region_prompt"):
            parser.add_argument(
                flag,
                action="append",
                default=[],
                metavar="TRIGGER=WHERE" if f.name == "region" else "WHERE=PROMPT",
                help=f.metadata.get("help", ""),
            )
            continue
        if f.name == "lora":  # repeatable FILE[:SCALE]
            parser.add_argument(
                flag,
                action="append",
                default=[],
                metavar="FILE[:SCALE]",
                help=f.metadata.get("help", ""),
            )
            continue
        if f.default is dataclasses.MISSING:  # nested configs are set in TOML/JSON, not flags
            continue
        kind = type(f.default)
        help_ = f.metadata.get("help", "") + f" (default: {f.default})"
        if kind is bool:
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=f.default, help=help_
            )
        else:
            parser.add_argument(flag, type=kind, default=f.default, help=help_)


class CommandLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose namespace also records which flags the command line named
    (``named_options``), so ``--lr 5e-4`` counts as given even where 5e-4 is the default: a
    resume must not then take the run's own lr instead. Its subcommand parsers are of this class
    too (argparse makes them of their parent's), but only the top-level ``parse_args`` records."""

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        argv = sys.argv[1:] if args is None else list(args)
        parsed = super().parse_args(argv, namespace)
        parsed.named_options = named_options(argv)
        return parsed


def named_options(argv: list[str]) -> set[str]:
    """The destinations of the flags that ``argv`` names, at whatever value."""
    parser = build_parser()
    parsers, dests = [parser], set()
    while parsers:
        for action in parsers.pop()._actions:
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(action.choices.values())
            elif action.option_strings:
                action.default = argparse.SUPPRESS  # absent flags leave no attribute
                dests.add(action.dest)
    return dests & set(vars(argparse.ArgumentParser.parse_args(parser, argv)))


def given_on_command_line(args: argparse.Namespace) -> dict[str, Any]:
    """The options that this command line gave, at whatever value."""
    return {k: getattr(args, k) for k in args.named_options}


def restore_run_settings(cfg: Any, args: argparse.Namespace, per_invocation: tuple[str, ...]):
    """For --resume: the run's own config.json supplies what this command line does not give."""
    from .training.checkpoint import settings_from_run

    saved = Path(cfg.out) / "config.json"
    given = set(given_on_command_line(args))
    restored = settings_from_run(cfg, saved, given, per_invocation)
    if restored:
        print(f"resume: {', '.join(restored)} as in {saved}", file=sys.stderr)


def dataclass_from_args(cls, args: argparse.Namespace, **extra: Any):
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in vars(args).items() if k in names}
    values.update(extra)
    return cls(**values)


# ------------------------------------------------------------------------------- commands


def cmd_pretrain(args: argparse.Namespace) -> int:
    from .pretrain import (
        PER_INVOCATION,
        PretrainConfig,
        PretrainSetupError,
        check_warm_start,
        resolve_architecture,
        run_pretrain,
    )

    cfg = dataclass_from_args(PretrainConfig, args)
    try:
        if args.resume:
            restore_run_settings(cfg, args, PER_INVOCATION)
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
    from .models import TINY_DIR
    from .pretrain import export_model

    dest = Path(args.to) if args.to else TINY_DIR
    print(f"exported to {export_model(Path(args.run), dest, args.notes, args.overwrite)}")
    return 0


def cmd_model_path(args: argparse.Namespace) -> int:
    from .models import tiny_model_dir

    print(tiny_model_dir())
    return 0


def cmd_world_person(args: argparse.Namespace) -> int:
    from .data.world_folders import write_person_folder

    out = write_person_folder(
        args.seed, Path(args.out), args.count, overwrite=args.overwrite, captions=args.captions
    )
    print(f"wrote {args.count} photos of held-out person {args.seed} to {out}")
    return 0


def cmd_world_clip(args: argparse.Namespace) -> int:
    from .data.world_folders import write_person_clip

    paths = write_person_clip(
        args.seed,
        Path(args.out),
        frames=args.frames,
        scene_seed=args.scene_seed,
        overwrite=args.overwrite,
    )
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from .generation import GenerateConfig, generate_to_files

    cfg = dataclass_from_args(GenerateConfig, args)
    try:
        cfg.validate()
        paths = generate_to_files(cfg)
    except ValueError as e:
        raise UserError(str(e)) from e
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .data import DatasetError
    from .training import PER_INVOCATION, TrainConfig, TrainingInterrupted, run_training

    explicit = {
        k: v
        for k, v in vars(args).items()
        if k in {f.name for f in dataclasses.fields(TrainConfig)}
    }
    try:
        if args.config:
            given = given_on_command_line(args)
            overrides = {k: v for k, v in given.items() if k in explicit}
            cfg = TrainConfig.from_toml(Path(args.config), **overrides)
        else:
            cfg = TrainConfig(**explicit)
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


def cmd_sweep(args: argparse.Namespace) -> int:
    from .generation.sweep import run_sweep

    try:
        scales = [float(s) for s in args.scales.split(",") if s.strip()]
    except ValueError as e:
        raise UserError(f"--scales must be numbers separated by commas: {e}") from e
    run_sweep(
        Path(args.lora),
        scales,
        Path(args.out),
        prompt=args.prompt,
        photos=Path(args.photos) if args.photos else None,
        base=args.base,
        seed=args.seed,
        overwrite=args.overwrite,
    )
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from .formats import ConversionError
    from .lora_files import convert_file

    if not Path(args.src).is_file():
        raise UserError(f"{args.src} does not exist")
    try:
        cov = convert_file(Path(args.src), Path(args.dst), args.to, overwrite=args.overwrite)
    except (ConversionError, ValueError) as e:
        raise UserError(str(e)) from e
    print(cov.format())
    print(f"wrote {args.dst}")
    return 0


def cmd_estimate(args: argparse.Namespace) -> int:
    from .estimate import estimate, to_json
    from .lora import LoraSpec
    from .models import resolve_base

    spec = LoraSpec(rank=args.rank, alpha=args.rank, targets=args.targets, ffn=args.ffn)
    try:
        spec.validate()
        e = estimate(
            resolve_base(args.base),
            spec=spec,
            batch=args.batch,
            frames=args.frames,
            height=args.height,
            width=args.width,
            precision=args.precision,
            grad_checkpointing=args.grad_checkpointing,
            fused_attention=args.fused_attention,
            matmul_tflops=args.tflops,
            prior_preservation=args.prior_preservation > 0,
            prior_source=args.prior_source,
        )
    except ValueError as e:
        raise UserError(str(e)) from e
    print(to_json(e) if args.json else e.format())
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    import json

    from .compose import (
        inspect_modules,
        interference_score,
        load_modules,
        overlap,
        recommended_rank,
    )

    for f in args.files:
        if not Path(f).is_file():
            raise UserError(f"{f} does not exist")
    try:
        mods = [load_modules(Path(f))[0] for f in args.files]
    except ValueError as e:
        raise UserError(str(e)) from e
    report: dict = {}
    for f, m in zip(args.files, mods, strict=True):
        rows = inspect_modules(m)
        report[f] = {"modules": rows, "recommended_rank": recommended_rank(rows)}
        print(f"{f}: {len(rows)} modules, recommended rank {report[f]['recommended_rank']}")
        print(f"  {'module':34s} {'rank':>4s} {'|dW|':>9s} {'r90':>4s} {'r99':>4s}")
        for r in rows:
            print(
                f"  {r['module']:34s} {r['rank']:4d} {r['norm']:9.4f} {r['rank90']:4d} {r['rank99']:4d}"
            )
    if len(mods) == 2:
        rows = overlap(*mods)
        score = interference_score(rows)
        report["overlap"] = {"modules": rows, "interference": score}
        print(
            f"overlap of the two files: predicted interference {score:.4f} (0 = disjoint input subspaces, 1 = the same)"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


def cmd_resize(args: argparse.Namespace) -> int:
    from .compose import load_modules, resize, save_modules

    if not Path(args.src).is_file():
        raise UserError(f"{args.src} does not exist")
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} exists")
    if args.rank < 1:
        raise UserError("--rank must be at least 1")
    mods, meta = load_modules(Path(args.src))
    small, kept = resize(mods, args.rank)
    save_modules(out, small, {**meta, "cameo.resized_from": Path(args.src).name})
    print(f"rank {args.rank}: kept {kept:.4%} of the squared norm of the change; wrote {out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    if args.person < 0:
        raise UserError("--person must be a held-out person's index (0 or more)")
    run_demo(Path(args.out), overwrite=args.overwrite, person=args.person)
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    try:
        from .ui import launch
    except ImportError as e:  # gradio is a dependency; a partial install lacks it
        raise UserError(f"the web app needs gradio ({e}); pip install -e .") from e
    try:
        launch(workdir=Path(args.workdir), host=args.host, port=args.port, base=args.base)
    except OSError as e:
        raise UserError(f"cannot serve on {args.host}:{args.port} ({e}); try --port") from e
    return 0


def cmd_eyes_recalibrate(args: argparse.Namespace) -> int:
    from .metrics.nets import EYES_DIR
    from .metrics.train_eyes import recalibrate_eyes

    for f in (args.probe, args.counter, args.bank):
        if not Path(f).is_file():
            raise UserError(f"{f} does not exist")
    card = recalibrate_eyes(
        Path(args.probe),
        Path(args.counter),
        Path(args.out) if args.out else EYES_DIR,
        Path(args.bank),
    )
    v = card["validation"]
    print(", ".join(f"{k} {v[k]:.3f}" for k in v if "accuracy" in k))
    return 0


def cmd_eyes_train(args: argparse.Namespace) -> int:
    from .metrics.train_eyes import EyesConfig, train_eyes

    card = train_eyes(dataclass_from_args(EyesConfig, args))
    v = card["validation"]
    print(
        f"identification top-1 {v['identification_top1']:.3f}, verification AUC {v['verification_auc']:.4f}, "
        f"trained in {card['train_minutes']} min; weights in {args.out}"
    )
    return 0


def _read_prompt_file(path: str | None) -> dict[str, list[str]] | None:
    """A prompt file: one prompt per line; lines after a line '# others' are leakage prompts."""
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        raise UserError(f"prompt file {p} does not exist")
    groups: dict[str, list[str]] = {"subject": [], "others": []}
    current = "subject"
    for line in p.read_text(errors="replace").splitlines():
        line = line.strip()
        if line.lower().startswith("# others"):
            current = "others"
        elif line and not line.startswith("#"):
            groups[current].append(line)
    return {k: v for k, v in groups.items() if v}


def cmd_study(args: argparse.Namespace) -> int:
    from .study import StudyConfig, run_study

    cfg = dataclass_from_args(StudyConfig, args)
    try:
        cfg.validate()
    except ValueError as e:
        raise UserError(str(e)) from e
    print(f"results written to {run_study(cfg)}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import json

    from .metrics.evaluate import Eyes, eval_clip_folder, eval_lora, format_lora_table, format_table

    if (args.clips is None) == (args.lora is None):
        raise UserError("give exactly one of --clips DIR or --lora FILE")
    for flag, value in (("--photos", args.photos), ("--clips", args.clips), ("--lora", args.lora)):
        if value is not None and not Path(value).exists():
            raise UserError(f"{flag} {value} does not exist")
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} exists")
    eyes = Eyes(encoder_dir=Path(args.encoder) if args.encoder else None)
    if args.clips is not None:
        report = eval_clip_folder(
            eyes, Path(args.clips), Path(args.photos) if args.photos else None
        )
        table = format_table(report)
    else:
        if args.photos is None:
            raise UserError("--lora needs --photos, the subject's reference photos")
        try:
            report = eval_lora(
                eyes,
                Path(args.lora),
                Path(args.photos),
                base=args.base,
                trigger=args.trigger,
                prompts=_read_prompt_file(args.prompts),
                seeds=args.seeds,
                scale=args.scale,
                save_clips=Path(args.save_clips) if args.save_clips else None,
            )
        except ValueError as e:
            raise UserError(str(e)) from e
        table = format_lora_table(report)
    print(table)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"report written to {out}")
    return 0


def _add_generate_parsers(sub) -> None:
    """The generate and sweep commands."""
    from .generation import GenerateConfig

    g = sub.add_parser(
        "generate", help="render a clip from a prompt (MP4, GIF and a PNG contact sheet)"
    )
    g.add_argument(
        "prompt",
        help="what to show, e.g. 'a woman with long red hair, speaking, in front of a blue wall'",
    )
    add_dataclass_args(g, GenerateConfig, skip=("prompt",))
    g.set_defaults(func=cmd_generate)

    sw = sub.add_parser(
        "sweep", help="one prompt at several LoRA scales: a video grid, a contact sheet, metrics"
    )
    sw.add_argument("--lora", required=True, help="LoRA file")
    sw.add_argument("--scales", default="0,0.25,0.5,0.75,1,1.25", help="comma-separated scales")
    sw.add_argument(
        "--prompt",
        default=None,
        help="prompt (default: the trigger, speaking, in front of a blue wall)",
    )
    sw.add_argument("--photos", default=None, help="reference photos for the identity metric")
    sw.add_argument("--base", default=None, help="base model directory (default: cameo-tiny)")
    sw.add_argument("--seed", type=int, default=0, help="seed")
    sw.add_argument("--out", default="sweep", help="output folder")
    sw.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    sw.set_defaults(func=cmd_sweep)


def _add_training_parsers(sub) -> None:
    """The train and pretrain commands."""
    from .pretrain import PretrainConfig
    from .training import TrainConfig

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


def _add_lora_file_parsers(sub) -> None:
    """The convert, inspect, resize, estimate commands."""
    from .lora import DEFAULT_TARGETS

    cv = sub.add_parser(
        "convert", help="convert a Wan LoRA between diffusers, ComfyUI and kohya/musubi keys"
    )
    cv.add_argument("src", help="input .safetensors")
    cv.add_argument("dst", help="output .safetensors")
    cv.add_argument(
        "--to", required=True, choices=["diffusers", "comfyui", "kohya"], help="target key format"
    )
    cv.add_argument("--overwrite", action="store_true", help="replace an existing output")
    cv.set_defaults(func=cmd_convert)

    ins = sub.add_parser(
        "inspect", help="per-layer norm, spectrum and effective rank of LoRA files; overlap of two"
    )
    ins.add_argument("files", nargs="+", help="one or two LoRA files (any key format)")
    ins.add_argument("--json", default=None, help="also write the full report here")
    ins.set_defaults(func=cmd_inspect)

    rs = sub.add_parser("resize", help="truncate a LoRA to a lower rank by SVD")
    rs.add_argument("src", help="input LoRA")
    rs.add_argument("--rank", type=int, required=True, help="new rank")
    rs.add_argument("--out", required=True, help="output LoRA")
    rs.add_argument("--overwrite", action="store_true", help="replace an existing output")
    rs.set_defaults(func=cmd_resize)

    es = sub.add_parser("estimate", help="predict peak memory and time per step of a training run")
    es.add_argument("--base", default=None, help="base model directory (default: cameo-tiny)")
    es.add_argument("--rank", type=int, default=16, help="LoRA rank")
    es.add_argument("--targets", default=DEFAULT_TARGETS, help="adapted modules")
    es.add_argument("--ffn", action="store_true", help="also adapt the feed-forward layers")
    es.add_argument("--batch", type=int, default=8, help="batch size")
    es.add_argument("--frames", type=int, default=1, help="frames per sample (1 for photos)")
    es.add_argument("--height", type=int, default=64, help="height in pixels")
    es.add_argument("--width", type=int, default=64, help="width in pixels")
    es.add_argument(
        "--precision",
        choices=["fp32", "bf16", "fp16"],
        default="fp32",
        help="weight/activation precision",
    )
    es.add_argument(
        "--grad-checkpointing", action="store_true", help="recompute activations in backward"
    )
    es.add_argument(
        "--fused-attention", action="store_true", help="flash/memory-efficient attention (GPU)"
    )
    es.add_argument(
        "--tflops",
        type=float,
        default=None,
        help="sustained matmul TFLOP/s (default: measured here)",
    )
    from .training.config import PRIOR_SOURCES, TrainConfig

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


def _add_world_and_demo_parsers(sub) -> None:
    """The demo and world commands."""
    d = sub.add_parser("demo", help="the main job on the built-in model (what `make demo` runs)")
    d.add_argument("--out", default="cameo-demo", help="folder for everything the demo writes")
    d.add_argument("--overwrite", action="store_true", help="replace an earlier demo's outputs")
    from .demo import DEMO_PERSON

    d.add_argument(
        "--person",
        type=int,
        default=DEMO_PERSON,
        help=f"which held-out world person to clone (default: {DEMO_PERSON})",
    )
    d.set_defaults(func=cmd_demo)

    w = sub.add_parser("world", help="the procedural world: write photos or clips of its people")
    wsub = w.add_subparsers(dest="world_command", required=True)
    wp = wsub.add_parser(
        "person", help="a held-out person's captioned photo folder, as a user brings one"
    )
    wp.add_argument("--seed", type=int, required=True, help="which held-out person")
    wp.add_argument("--out", required=True, help="folder to create")
    wp.add_argument("--count", type=int, default=20, help="number of photos")
    wp.add_argument(
        "--captions",
        choices=["named", "described"],
        default="named",
        help="named: [trigger] plus what varies (the way to caption a LoRA's photos); "
        "described: also the person's hair, glasses and other traits",
    )
    wp.add_argument(
        "--overwrite", action="store_true", help="write into an existing non-empty folder"
    )
    wp.set_defaults(func=cmd_world_person)
    wc = wsub.add_parser("clip", help="a held-out person speaking: MP4, GIF and caption")
    wc.add_argument("--seed", type=int, required=True, help="which held-out person")
    wc.add_argument("--out", required=True, help="output MP4 path")
    wc.add_argument("--frames", type=int, default=17, help="frames (4k+1)")
    wc.add_argument("--scene-seed", type=int, default=0, help="which scene")
    wc.add_argument("--overwrite", action="store_true", help="replace existing files")
    wc.set_defaults(func=cmd_world_clip)


def _add_ui_parser(sub) -> None:
    """The web app."""
    ui = sub.add_parser("ui", help="the web app: photos, train, generate, results in a browser")
    ui.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to serve on (default: this computer only; 0.0.0.0 opens it to the network)",
    )
    ui.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    ui.add_argument(
        "--workdir", default="cameo-ui-work", help="folder for sessions' photos, runs and clips"
    )
    ui.add_argument("--base", default="cameo-tiny", help="base model (default: cameo-tiny)")
    ui.set_defaults(func=cmd_ui)


def _add_measurement_parsers(sub) -> None:
    """The eyes, eval and study commands."""
    from .metrics.train_eyes import EyesConfig
    from .study import StudyConfig

    st = sub.add_parser(
        "study",
        help="measure the trade-offs (rank, scale, LoRA vs full fine-tuning, composition) into docs/results.md",
    )
    add_dataclass_args(st, StudyConfig)
    st.set_defaults(func=cmd_study)

    e = sub.add_parser("eyes", help="cameo's measuring eyes: identity encoder and attribute probes")
    esub = e.add_subparsers(dest="eyes_command", required=True)
    et = esub.add_parser("train", help="train and validate them on world renders")
    add_dataclass_args(et, EyesConfig)
    et.set_defaults(func=cmd_eyes_train)
    er = esub.add_parser(
        "recalibrate",
        help="re-estimate a BatchNorm probe's statistics on single-person frames; ship it with a people counter",
    )
    er.add_argument("--probe", required=True, help="BatchNorm attribute probe (.safetensors)")
    er.add_argument(
        "--counter", required=True, help="net whose people head counts people on whole canvases"
    )
    er.add_argument(
        "--bank",
        default="runs/eyes-bank.npz",
        help="rendered training photos (from cameo eyes train)",
    )
    er.add_argument("--out", default=None, help="eyes folder (default: the package's)")
    er.set_defaults(func=cmd_eyes_recalibrate)

    ev = sub.add_parser(
        "eval", help="measure identity, prompt fidelity and leakage of a LoRA or a folder of clips"
    )
    ev.add_argument("--photos", help="folder of the subject's reference photos")
    ev.add_argument(
        "--clips", help="folder of clips to score (each with a same-name .txt or .json prompt)"
    )
    ev.add_argument("--lora", help="LoRA .safetensors to generate with and score")
    ev.add_argument("--base", default=None, help="base model directory (default: cameo-tiny)")
    ev.add_argument(
        "--trigger",
        default=None,
        help="the subject's trigger word (default: from the LoRA's metadata)",
    )
    ev.add_argument(
        "--prompts", default=None, help="prompt file; lines after '# others' are leakage prompts"
    )
    ev.add_argument("--seeds", type=int, default=2, help="seeds per prompt")
    ev.add_argument("--scale", type=float, default=1.0, help="LoRA scale")
    ev.add_argument("--save-clips", default=None, help="also write the generated clips here")
    ev.add_argument(
        "--encoder",
        default=None,
        help="local transformers vision model dir as identity encoder (e.g. DINOv2) for real photos",
    )
    ev.add_argument("--out", default="eval.json", help="JSON report path")
    ev.add_argument("--overwrite", action="store_true", help="replace an existing report")
    ev.set_defaults(func=cmd_eval)


def _add_model_parsers(sub) -> None:
    """The model path and export commands."""
    m = sub.add_parser("model", help="the built-in model")
    msub = m.add_subparsers(dest="model_command", required=True)
    mp = msub.add_parser(
        "path", help="print the cameo-tiny directory (loadable with WanPipeline.from_pretrained)"
    )
    mp.set_defaults(func=cmd_model_path)
    mx = msub.add_parser(
        "export", help="copy a finished pretraining run's pipeline here, with its model card"
    )
    mx.add_argument("--run", default="runs/pretrain", help="the pretraining run folder")
    mx.add_argument("--to", default=None, help="destination (default: the package's cameo-tiny)")
    mx.add_argument("--notes", default="", help="text added to the model card")
    mx.add_argument("--overwrite", action="store_true", help="replace the model in --to")
    mx.set_defaults(func=cmd_model_export)


def build_parser() -> argparse.ArgumentParser:
    p = CommandLineParser(
        prog="cameo", description="Clone a person into a text-to-video model with LoRA."
    )
    sub = p.add_subparsers(dest="command", required=True)
    _add_generate_parsers(sub)
    _add_training_parsers(sub)
    _add_lora_file_parsers(sub)
    _add_world_and_demo_parsers(sub)
    _add_measurement_parsers(sub)
    _add_model_parsers(sub)
    _add_ui_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"cameo {args.command}: {e}", file=sys.stderr)
        return EXIT_USAGE
    except FileExistsError as e:
        print(f"cameo {args.command}: {e} (pass --overwrite to replace it)", file=sys.stderr)
        return EXIT_REFUSED
    except FileNotFoundError as e:
        print(f"cameo {args.command}: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:
        if e.errno == errno.ENOSPC or e.__class__.__name__ == "DiskFullError":
            print(f"cameo {args.command}: {e}", file=sys.stderr)
            return EXIT_DISK
        raise
    except KeyboardInterrupt:
        print(f"cameo {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
