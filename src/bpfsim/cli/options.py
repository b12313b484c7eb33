"""Shared CLI options and helpers of `run`, `diff` and `verify`: reading input files, choosing a
program, printing JSON.  Public API only."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import click

from bpfsim.errors import UsageError
from bpfsim.units import parse_duration


def not_a_file(path: str | os.PathLike[str]) -> str | None:
    """Why `path` cannot be read as an input file, or None when it can.  A FIFO is fine; a
    device is not (/dev/zero would be read forever)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "no such file"
    except OSError as exc:
        return exc.strerror or str(exc)
    if stat.S_ISDIR(mode):
        return "is a directory"
    if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
        return "not a regular file"
    return None


def read_bytes(path: str | None, what: str) -> bytes | None:
    """The bytes of FILE for --data/--ctx, or None; an unreadable path is one clear error."""
    if path is None:
        return None
    why = not_a_file(path)
    if why:
        raise UsageError(f"--{what}: {path}: {why}")
    return Path(path).read_bytes()


class ObjectFile(click.Path):
    """The OBJ argument: a path whose problems (missing, a directory, a device) are one clear
    usage error; a missing file is left to the loader, whose message names its stage."""

    def __init__(self) -> None:
        super().__init__(dir_okay=False)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        path = super().convert(value, param, ctx)
        why = not_a_file(path)
        if why and why != "no such file":
            self.fail(f"{value}: {why}", param, ctx)
        return path


def choose_program(spec: Any, name: str | None) -> str:
    """The program to run: --prog, or the only one; several without --prog is an error."""
    names = list(spec.programs)
    if name is not None:
        if name not in spec.programs:
            raise UsageError(f"no program named {name!r} in {spec.path or 'the object'} "
                             f"(programs: {', '.join(names) or 'none'})")
        return name
    if not names:
        raise UsageError(f"{spec.path or 'the object'} holds no program")
    if len(names) > 1:
        raise UsageError(f"{spec.path or 'the object'} holds {len(names)} programs "
                         f"({', '.join(names)}); choose one with --prog")
    return names[0]


def duration(_ctx: click.Context, _param: click.Parameter, value: str | None) -> int | None:
    """click callback: parse "30s", "5ms", ... into nanoseconds."""
    if value is None:
        return None
    try:
        return parse_duration(value)
    except UsageError as exc:
        raise click.BadParameter(str(exc)) from None


def emit_json(doc: Any) -> None:
    json.dump(doc, sys.stdout, indent=2, sort_keys=False, default=_jsonable)
    sys.stdout.write("\n")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, (bytes, bytearray)):
        return obj.hex()
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "__dict__"):
        return vars(obj)
    return str(obj)


RUN_OPTIONS = [
    click.argument("obj", type=ObjectFile()),
    click.option("--prog", "prog", metavar="NAME", help="Program to run (default: the only one)."),
    click.option("--data", "data", metavar="FILE", help="Packet / input data for test_run."),
    click.option("--ctx", "ctx", metavar="FILE", help="Context bytes for test_run."),
    click.option("--repeat", type=click.IntRange(1, 1_000_000), default=1, show_default=True,
                 help="Run the program N times (like BPF_PROG_TEST_RUN's repeat)."),
    click.option("--advance", "advance", metavar="DURATION", callback=duration,
                 help="After the run let time pass (e.g. 30s, 5ms): timers fire."),
    click.option("--json", "as_json", is_flag=True, help="Print one JSON document."),
]


def run_options(func: Any) -> Any:
    for option in reversed(RUN_OPTIONS):
        func = option(func)
    return func
