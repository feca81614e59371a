"""``cameo convert``, ``inspect`` and ``resize``: LoRA files between key formats, what a LoRA
changes layer by layer (and how two overlap), and a LoRA cut to a lower rank."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..compose import (
    inspect_modules,
    interference_score,
    load_modules,
    overlap,
    recommended_rank,
    resize,
    save_modules,
)
from ..formats import ConversionError
from ..lora_files import convert_file
from .args import UserError, existing_file


def cmd_convert(args: argparse.Namespace) -> int:
    src = existing_file(args.src)
    try:
        cov = convert_file(src, Path(args.dst), args.to, overwrite=args.overwrite)
    except (ConversionError, ValueError) as e:
        raise UserError(str(e)) from e
    print(cov.format())
    for written in cov.files:
        print(f"wrote {written}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    files = [existing_file(f) for f in args.files]
    try:
        mods = [load_modules(f)[0] for f in files]
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
    src = existing_file(args.src)
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} exists")
    if args.rank < 1:
        raise UserError("--rank must be at least 1")
    mods, meta = load_modules(src)
    small, kept = resize(mods, args.rank)
    save_modules(out, small, {**meta, "cameo.resized_from": src.name})
    print(f"rank {args.rank}: kept {kept:.4%} of the squared norm of the change; wrote {out}")
    return 0


def add_parsers(sub) -> None:
    """convert, inspect and resize."""
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
