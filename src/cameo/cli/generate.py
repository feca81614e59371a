"""``cameo generate``, ``sweep``, ``demo`` and ``world``: clips from a prompt, a LoRA at several
scales, the whole job on the built-in model, and the procedural world's people."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from ..data.world_folders import write_person_clip, write_person_folder
from ..demo import DEMO_PERSON, run_demo
from ..generation import GenerateConfig, generate_to_files
from ..generation.sweep import run_sweep
from .args import UserError, add_dataclass_args, dataclass_from_args


def cmd_generate(args: argparse.Namespace) -> int:
    cfg = dataclass_from_args(GenerateConfig, args)
    try:
        cfg.validate()
        paths = generate_to_files(cfg)
    except ValueError as e:
        raise UserError(str(e)) from e
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def check_placement(args: argparse.Namespace) -> None:
    """A UserError for a --device, --dtype or --offload this machine cannot honour."""
    try:
        GenerateConfig(
            prompt="-", **{k: getattr(args, k) for k in PLACEMENT if hasattr(args, k)}
        ).validate()
    except ValueError as e:
        raise UserError(str(e)) from e


def cmd_sweep(args: argparse.Namespace) -> int:
    check_placement(args)
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
        **{k: getattr(args, k) for k in PLACEMENT},
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    if args.person < 0:
        raise UserError("--person must be a held-out person's index (0 or more)")
    check_placement(args)
    run_demo(
        Path(args.out),
        overwrite=args.overwrite,
        person=args.person,
        device=args.device,
        dtype=args.dtype,
    )
    return 0


PLACEMENT = ("device", "dtype", "fp8_base", "offload")  # where the model runs


def add_placement_args(parser: argparse.ArgumentParser, names=PLACEMENT) -> None:
    """``GenerateConfig``'s device, dtype, fp8 and offload flags, with their help texts, for
    commands that generate without taking every generation option."""
    fields = {f.name: f for f in dataclasses.fields(GenerateConfig)}
    for name in names:
        f = fields[name]
        flag, help_ = "--" + name.replace("_", "-"), f"{f.metadata['help']} (default: {f.default})"
        if isinstance(f.default, bool):
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=f.default, help=help_
            )
        else:
            parser.add_argument(flag, default=f.default, help=help_)


def cmd_world_person(args: argparse.Namespace) -> int:
    out = write_person_folder(
        args.seed,
        Path(args.out),
        args.count,
        overwrite=args.overwrite,
        captions=args.captions,
        clips=args.clips,
    )
    clips = f" and {args.clips} clips" if args.clips else ""
    print(f"wrote {args.count} photos{clips} of held-out person {args.seed} to {out}")
    return 0


def cmd_world_clip(args: argparse.Namespace) -> int:
    paths = write_person_clip(
        args.seed,
        Path(args.out),
        frames=args.frames,
        scene_seed=args.scene_seed,
        overwrite=args.overwrite,
    )
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def add_parsers(sub) -> None:
    """generate, sweep, demo and world."""
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
    add_placement_args(sw)
    sw.set_defaults(func=cmd_sweep)

    d = sub.add_parser("demo", help="the main job on the built-in model (what `make demo` runs)")
    d.add_argument("--out", default="cameo-demo", help="folder for everything the demo writes")
    d.add_argument("--overwrite", action="store_true", help="replace an earlier demo's outputs")
    d.add_argument(
        "--person",
        type=int,
        default=DEMO_PERSON,
        help=f"which held-out world person to clone (default: {DEMO_PERSON})",
    )
    add_placement_args(d, ("device", "dtype"))
    d.set_defaults(func=cmd_demo)
    _add_world_parser(sub)


def _add_world_parser(sub) -> None:
    w = sub.add_parser("world", help="the procedural world: write photos or clips of its people")
    wsub = w.add_subparsers(dest="world_command", required=True)
    wp = wsub.add_parser(
        "person", help="a held-out person's captioned photo folder, as a user brings one"
    )
    wp.add_argument("--seed", type=int, required=True, help="which held-out person")
    wp.add_argument("--out", required=True, help="folder to create")
    wp.add_argument("--count", type=int, default=20, help="number of photos")
    wp.add_argument(
        "--clips",
        type=int,
        default=0,
        help="also this many captioned 17-frame MP4 clips (motion for image-to-video LoRAs)",
    )
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
