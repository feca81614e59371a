"""``cameo ui``: the web app (photos, train, generate, results in a browser)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..ui import launch
from .args import UserError
from .generate import add_placement_args, check_placement


def cmd_ui(args: argparse.Namespace) -> int:
    check_placement(args)
    try:
        launch(
            workdir=Path(args.workdir),
            host=args.host,
            port=args.port,
            base=args.base,
            device=args.device,
            dtype=args.dtype,
        )
    except ModuleNotFoundError as e:  # gradio is a dependency; a partial install lacks it
        raise UserError(f"the web app needs {e.name} ({e}); pip install -e .") from e
    except OSError as e:
        raise UserError(f"cannot serve on {args.host}:{args.port} ({e}); try --port") from e
    return 0


def add_parsers(sub) -> None:
    """ui."""
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
    add_placement_args(ui, ("device", "dtype"))
    ui.set_defaults(func=cmd_ui)
