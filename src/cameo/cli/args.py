"""What every command shares: its exit codes, the user-error type, dataclass fields as flags,
and the resume helpers that tell the flags a command line named from the defaults."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
from pathlib import Path
from typing import Any

from ..training.checkpoint import settings_from_run

EXIT_USAGE, EXIT_REFUSED, EXIT_DIVERGED, EXIT_DISK, EXIT_INTERRUPTED = 2, 3, 4, 5, 130


# Fields whose default is None (filled later, e.g. from the base model): the flag's type.
_OPTIONAL = {"int | None": int, "float | None": float, "str | None": str, "bool | None": bool}


class UserError(Exception):
    """A problem the user can fix; printed without a traceback."""


def add_dataclass_args(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    """One ``--flag`` per scalar dataclass field, its help text taken from the field metadata."""
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        if f.name in skip:
            continue
        if f.metadata.get("flatten"):  # a nested config whose fields are flags of their own
            add_dataclass_args(parser, f.default_factory, skip)
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
        if f.default is dataclasses.MISSING:  # other nested configs are set in TOML/JSON
            continue
        kind = type(f.default) if f.default is not None else _OPTIONAL[str(f.type)]
        help_ = f.metadata.get("help", "")
        if f.default is not None:  # None: the help says where the value comes from
            help_ += f" (default: {f.default})"
        if kind is bool:
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=f.default, help=help_
            )
        else:
            parser.add_argument(flag, type=kind, default=f.default, help=help_)


def dataclass_from_args(cls, args: argparse.Namespace, **extra: Any):
    """An instance of the dataclass ``cls`` from the parsed flags of its fields."""
    values = {}
    for f in dataclasses.fields(cls):
        if f.metadata.get("flatten"):
            values[f.name] = dataclass_from_args(f.default_factory, args)
        elif f.name in vars(args):
            values[f.name] = getattr(args, f.name)
    values.update(extra)
    return cls(**values)


class CommandLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose namespace also records which flags the command line named
    (``named_options``), so ``--lr 5e-4`` counts as given even where 5e-4 is the default: a
    resume must not then take the run's own lr instead. Its subcommand parsers are of this class
    too (argparse makes them of their parent's), but only the top-level ``parse_args`` records."""

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        argv = sys.argv[1:] if args is None else list(args)
        parsed = super().parse_args(argv, namespace)
        parsed.named_options = named_options(self, argv)
        return parsed


def named_options(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The destinations of the flags that ``argv`` names, at whatever value: ``argv`` parsed
    again by a copy of ``parser`` whose absent flags leave no attribute."""
    parser = copy.deepcopy(parser)
    parsers, dests = [parser], set()
    while parsers:
        for action in parsers.pop()._actions:
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(action.choices.values())
            elif action.option_strings:
                action.default = argparse.SUPPRESS
                dests.add(action.dest)
    return dests & set(vars(argparse.ArgumentParser.parse_args(parser, argv)))


def given_on_command_line(args: argparse.Namespace) -> dict[str, Any]:
    """The options that this command line gave, at whatever value."""
    return {k: getattr(args, k) for k in args.named_options}


def restore_run_settings(cfg: Any, args: argparse.Namespace, per_invocation: tuple[str, ...]):
    """For --resume: the run's own config.json supplies what this command line does not give."""
    saved = Path(cfg.out) / "config.json"
    given = set(given_on_command_line(args))
    restored = settings_from_run(cfg, saved, given, per_invocation)
    if restored:
        print(f"resume: {', '.join(restored)} as in {saved}", file=sys.stderr)


def existing_file(path: str, what: str = "") -> Path:
    """``path`` as a Path, or a UserError naming it if no such file exists."""
    if not Path(path).is_file():
        raise UserError(f"{what}{path} does not exist")
    return Path(path)
