"""The ``cameo`` command line: thin commands that parse arguments and call the library.

One module per group of commands (``train``: train, estimate, pretrain, model; ``generate``:
generate, sweep, demo, world; ``photos``: the photo check; ``lora``: convert, inspect,
resize; ``measure``: eval, eyes; ``ui``), each adding its parsers; ``args`` holds what they share.

User mistakes (bad paths, bad values, existing outputs) end with a one-line message and a
non-zero exit code, never a traceback. Exit codes: 0 ok, 2 usage or input error, 3 refused
(would overwrite, nothing to do), 4 training diverged (NaN/Inf), 5 disk full, 130 interrupted.
"""

from __future__ import annotations

import argparse
import errno
import sys

from . import generate, lora, measure, photos, train, ui
from .args import (
    EXIT_DISK,
    EXIT_DIVERGED,
    EXIT_INTERRUPTED,
    EXIT_REFUSED,
    EXIT_USAGE,
    CommandLineParser,
    UserError,
    dataclass_from_args,
    restore_run_settings,
)

__all__ = [
    "EXIT_DISK",
    "EXIT_DIVERGED",
    "EXIT_INTERRUPTED",
    "EXIT_REFUSED",
    "EXIT_USAGE",
    "UserError",
    "build_parser",
    "dataclass_from_args",
    "main",
    "restore_run_settings",
]


def build_parser() -> argparse.ArgumentParser:
    p = CommandLineParser(
        prog="cameo", description="Clone a person into a text-to-video model with LoRA."
    )
    sub = p.add_subparsers(dest="command", required=True)
    for commands in (generate, train, photos, lora, measure, ui):
        commands.add_parsers(sub)
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
