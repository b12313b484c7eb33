"""`bpfsim verify OBJ`: the verifier's verdict for each program, on the emulator or the kernel.

Each program is loaded on its own (with every map of the object), so one rejected program
does not hide the verdicts of the others.  Exit 1 when any program is rejected.
"""

from __future__ import annotations

from typing import Any

import click

import bpfsim
import bpfsim.kernel
from bpfsim.cli.main import exit_with
from bpfsim.cli.options import ObjectFile, emit_json
from bpfsim.errors import VerifierError


@click.command("verify")
@click.argument("obj", type=ObjectFile())
@click.option("--prog", "prog", metavar="NAME", help="Verify only this program.")
@click.option("--log-level", type=click.IntRange(0, 2), default=0, show_default=True,
              help="0: the verdict and error line; 1 and 2: the full log.")
@click.option("--backend", type=click.Choice(["sim", "kernel"]), default="sim", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def command(obj: str, prog: str | None, log_level: int, backend: str, as_json: bool) -> None:
    """Verify every program of OBJ (or --prog) and print each verdict."""
    spec = bpfsim.load_spec(obj)
    names = [prog] if prog else list(spec.programs)
    if prog and prog not in spec.programs:
        raise click.BadParameter(f"no program named {prog!r} (programs: {', '.join(spec.programs)})",
                                 param_hint="--prog")
    results = [verify_one(spec, name, backend, log_level) for name in names]
    if as_json:
        emit_json({"programs": results})
    else:
        for r in results:
            verdict = r["verdict"]
            click.echo(f"{r['name']}: {verdict}" + (f": {r['error']}" if r["error"] else ""))
            if log_level and r["log"]:
                click.echo("\n".join("  " + line for line in r["log"].rstrip("\n").splitlines()))
    if any(r["verdict"] == "rejected" for r in results):
        exit_with(1)


def verify_one(spec: Any, name: str, backend: str, log_level: int = 0) -> dict[str, Any]:
    """Load `spec` with only program `name`; return its `verify --json` entry."""
    one = only_program(spec, name)
    prog_spec = one.programs[name]
    entry: dict[str, Any] = {"name": name, "type": _type_name(prog_spec.type),
                             "section": prog_spec.section, "verdict": "accepted", "error": None,
                             "errno": None, "insn": None, "log": ""}
    try:
        if backend == "kernel":
            coll = bpfsim.kernel.load(one, log_level=log_level)
        else:
            coll = bpfsim.load(one)
        with coll:
            entry["log"] = str(getattr(coll.programs[name], "verifier_log", "") or "")
    except VerifierError as exc:
        entry.update(verdict="rejected", error=exc.message, errno=exc.errno, insn=exc.pc, log=exc.log)
    return entry


def only_program(spec: Any, name: str) -> Any:
    """A copy of `spec` that loads just `name`: autoload on (asking for a `SEC("?...")` program
    is libbpf's bpf_program__set_autoload), PROG_ARRAY `.values` naming the other programs
    dropped (they are not loaded), and no LIBBPF_PIN_BY_NAME (a verdict must not pin, nor
    trip over an incompatible pin left by someone else)."""
    one = spec.copy()
    one.programs = {name: one.programs[name]}
    one.programs[name].autoload = True
    for ms in one.maps.values():
        ms.pinning = 0
        ms.contents = [(k, v) for k, v in ms.contents
                       if not (isinstance(v, str) and v in spec.programs and v != name)]
    return one


def _type_name(prog_type: int) -> str:
    from bpfsim.uapi import ProgType

    try:
        return ProgType(prog_type).name.lower()
    except ValueError:
        return str(prog_type)
