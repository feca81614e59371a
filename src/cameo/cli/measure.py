"""``cameo eval`` and ``eyes``: a LoRA's or a clip folder's identity, prompt fidelity and
leakage, and the upkeep of the measuring eyes. (The eyes themselves are trained by
``recipes/train_eyes.py``.)"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..faces import FacesUnavailable
from ..metrics.evaluate import Eyes, eval_clip_folder, eval_lora, format_lora_table, format_table
from ..metrics.judges import IDENTITY_HELP, IDENTITY_JUDGES
from ..metrics.nets import EYES_DIR
from ..metrics.prompts import read_prompt_file
from ..metrics.train_eyes import recalibrate_eyes
from .args import UserError, existing_file
from .generate import add_placement_args, check_placement


def prompt_groups(path: str | None) -> dict[str, list[str]] | None:
    """The groups of a prompt file (``cameo.metrics.prompts.read_prompt_file``), or None."""
    if path is None:
        return None
    groups = read_prompt_file(existing_file(path, "prompt file "))
    if not groups:
        raise UserError(f"prompt file {path} holds no prompts")
    return groups


def cmd_eval(args: argparse.Namespace) -> int:
    if (args.clips is None) == (args.lora is None):
        raise UserError("give exactly one of --clips DIR or --lora FILE")
    for flag, value in (("--photos", args.photos), ("--clips", args.clips), ("--lora", args.lora)):
        if value is not None and not Path(value).exists():
            raise UserError(f"{flag} {value} does not exist")
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} exists")
    if args.encoder and args.identity == "face":
        raise UserError(
            "--encoder replaces the world judge's encoder; it does not apply to --identity face"
        )
    eyes = Eyes(encoder_dir=Path(args.encoder)) if args.encoder else None
    try:
        if args.clips is not None:
            photos = Path(args.photos) if args.photos else None
            report = eval_clip_folder(eyes, Path(args.clips), photos, identity=args.identity)
            table = format_table(report)
        else:
            report = _eval_lora(args, eyes)
            table = format_lora_table(report)
    except (ValueError, FacesUnavailable) as e:
        raise UserError(str(e)) from e
    print(table)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"report written to {out}")
    return 0


def _eval_lora(args: argparse.Namespace, eyes: Eyes | None) -> dict:
    check_placement(args)
    if args.photos is None:
        raise UserError("--lora needs --photos, the subject's reference photos")
    return eval_lora(
        eyes,
        Path(args.lora),
        Path(args.photos),
        base=args.base,
        trigger=args.trigger,
        prompts=prompt_groups(args.prompts),
        seeds=args.seeds,
        scale=args.scale,
        device=args.device,
        dtype=args.dtype,
        save_clips=Path(args.save_clips) if args.save_clips else None,
        identity=args.identity,
        first_frames=Path(args.first_frames) if args.first_frames else None,
        second_judge=args.second_judge,
    )


def cmd_eyes_recalibrate(args: argparse.Namespace) -> int:
    probe, counter, bank = (existing_file(f) for f in (args.probe, args.counter, args.bank))
    card = recalibrate_eyes(probe, counter, Path(args.out) if args.out else EYES_DIR, bank)
    v = card["validation"]
    print(", ".join(f"{k} {v[k]:.3f}" for k in v if "accuracy" in k))
    return 0


def add_parsers(sub) -> None:
    """eval and eyes."""
    ev = sub.add_parser(
        "eval", help="measure identity, prompt fidelity and leakage of a LoRA or a folder of clips"
    )
    ev.add_argument("--photos", help="folder of the subject's reference photos")
    ev.add_argument(
        "--clips", help="folder of clips to score (each with a same-name .txt or .json prompt)"
    )
    ev.add_argument("--lora", help="LoRA .safetensors to generate with and score")
    ev.add_argument(
        "--first-frames",
        default=None,
        help="image-to-video bases: folder of photos the clips start from, in turn (default: "
        "--photos); someone else's photos test whether the LoRA or the first frame wins",
    )
    ev.add_argument("--base", default=None, help="base model directory (default: cameo-tiny)")
    ev.add_argument(
        "--trigger",
        default=None,
        help="the subject's trigger word (default: from the LoRA's metadata)",
    )
    ev.add_argument(
        "--prompts",
        default=None,
        help="prompt file, one per line ([trigger] allowed); lines after '# others' are leakage "
        "prompts (default: cameo-tiny's world prompts, or real-world prompts on a real base)",
    )
    ev.add_argument("--identity", choices=IDENTITY_JUDGES, default="auto", help=IDENTITY_HELP)
    ev.add_argument("--seeds", type=int, default=2, help="seeds per prompt")
    ev.add_argument("--scale", type=float, default=1.0, help="LoRA scale")
    ev.add_argument("--save-clips", default=None, help="also write the generated clips here")
    ev.add_argument(
        "--no-second-judge",
        dest="second_judge",
        action="store_false",
        help="cameo-tiny: leave out dlib's face descriptor as a second identity judge (its "
        "line-up is built once and kept in ~/.cache/cameo)",
    )
    add_placement_args(ev, ("device", "dtype"))
    ev.add_argument(
        "--encoder",
        default=None,
        help="local transformers vision model dir as the world judge's identity encoder (e.g. DINOv2)",
    )
    ev.add_argument("--out", "--json", dest="out", default="eval.json", help="JSON report path")
    ev.add_argument("--overwrite", action="store_true", help="replace an existing report")
    ev.set_defaults(func=cmd_eval)

    e = sub.add_parser("eyes", help="cameo's measuring eyes: identity encoder and attribute probes")
    esub = e.add_subparsers(dest="eyes_command", required=True)
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
        help="rendered training photos (written by recipes/train_eyes.py)",
    )
    er.add_argument("--out", default=None, help="eyes folder (default: the package's)")
    er.set_defaults(func=cmd_eyes_recalibrate)
