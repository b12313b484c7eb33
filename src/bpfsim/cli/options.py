"""Shared CLI options and helpers of `run`, `diff` and `verify`: reading input files, choosing a
program, printing JSON.  Public API only."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from bpfsim.errors import UsageError
from bpfsim.units import parse_duration


def read_bytes(path: str | None, what: str) -> bytes | None:
    """The bytes of FILE for --data/--ctx, or None; a missing file is one clear error."""
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"--{what}: {path}: no such file")
    return p.read_bytes()


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
    click.argument("obj", type=click.Path(dir_okay=False)),
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
