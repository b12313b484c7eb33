"""`bpfsim run OBJ`: load an object, run one program, let time pass, show everything.

Shows the return value, the output data, every map (bpftool-shaped dump), the trace pipe and
the timer timeline.  Public API only.
"""

from __future__ import annotations

from typing import Any

import click

import bpfsim
import bpfsim.kernel
from bpfsim.cli.options import choose_program, emit_json, read_bytes, run_options


@click.command("run")
@run_options
@click.option("--clock", type=click.Choice(["virtual", "real"]), default="virtual", show_default=True,
              help="Virtual time (timers fire on --advance) or real time.")
@click.option("--backend", type=click.Choice(["sim", "kernel"]), default="sim", show_default=True,
              help="The emulator, or the running Linux kernel.")
@click.option("--timeline/--no-timeline", default=True, show_default=True,
              help="Show the timer timeline.")
def command(obj: str, prog: str | None, data: str | None, ctx: str | None, repeat: int,
            advance: int | None, as_json: bool, clock: str, backend: str, timeline: bool) -> None:
    """Load OBJ, run one program with test_run, and show the result, maps, trace and timeline."""
    data_in = read_bytes(data, "data")
    ctx_in = read_bytes(ctx, "ctx")
    spec = bpfsim.load_spec(obj)
    name = choose_program(spec, prog)
    report = run_once(spec, name, data_in, ctx_in, repeat, advance, clock, backend)
    if not timeline:
        report.pop("timeline", None)
    if as_json:
        emit_json(report)
    else:
        print_report(report)


def run_once(spec: Any, name: str, data: bytes | None, ctx: bytes | None, repeat: int,
             advance: int | None, clock: str, backend: str) -> dict[str, Any]:
    """Run `name` of `spec` on one backend; return the `run --json` document.

    The kernel backend reads bpf_printk lines from a private tracefs instance (`Kernel(trace=
    True)`) and lets --advance pass as real time; the emulator keeps its own trace pipe and
    timeline.  The runtime is closed whatever happens (a real clock has threads)."""
    if not spec.programs[name].autoload:   # asked for by name: libbpf's set_autoload(true)
        spec = spec.copy()
        spec.programs[name].autoload = True
    if backend == "kernel":
        rt: Any = bpfsim.kernel.Kernel(trace=True)
    else:
        rt = bpfsim.Runtime(clock=clock)
    try:
        with rt.load(spec) as coll:
            result = coll.programs[name].test_run(data=data, ctx=ctx, repeat=repeat)
            if advance is not None:
                rt.clock.advance(advance)   # virtual: timers fire at their deadlines; else sleeps
            return {
                "program": name,
                "backend": backend,
                "retval": result.retval,
                "data_out": (result.data or b"").hex(),
                "ctx_out": (result.ctx or b"").hex() if result.ctx is not None else None,
                "duration_ns": result.duration_ns,
                "maps": {mname: m.dump() for mname, m in coll.maps.items()},
                "trace": list(rt.trace_pipe),
                "timeline": [_event(e) for e in getattr(rt, "timeline", [])],
            }
    finally:
        rt.close()


def _event(e: Any) -> Any:
    return e.to_dict() if hasattr(e, "to_dict") else e


def print_report(doc: dict[str, Any]) -> None:
    """The human-readable form of a run."""
    import json

    echo = click.echo
    echo(f"program   {doc['program']}  ({doc['backend']})")
    echo(f"retval    {doc['retval']}")
    if doc.get("data_out"):
        raw = bytes.fromhex(doc["data_out"])
        echo(f"data out  {len(raw)} bytes: {raw[:32].hex(' ')}{' ...' if len(raw) > 32 else ''}")
    echo(f"duration  {doc['duration_ns']} ns")
    if doc.get("timeline"):
        echo("timeline")
        for e in doc["timeline"]:
            echo("  " + format_event(e))
    echo("maps")
    for mname, entries in doc["maps"].items():
        echo(f"  {mname}: {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}")
        for entry in entries[:16]:
            shown = entry.get("formatted", entry) if isinstance(entry, dict) else entry
            echo("    " + json.dumps(shown))
        if len(entries) > 16:
            echo(f"    ... {len(entries) - 16} more")
    echo("trace" + ("" if doc["trace"] else "     (empty)"))
    for line in doc["trace"]:
        echo("  " + line)


def format_event(e: dict[str, Any]) -> str:
    """One timeline event as a line: time, cpu, event, map[key], result."""
    t = e.get("time_ns", e.get("time", 0))
    parts = [f"{t / 1e9:>14.9f}s", f"cpu{e.get('cpu', 0)}", f"{e.get('event', '?'):<12}"]
    if e.get("map") is not None:
        parts.append(f"{e['map']}[{e.get('key')}]")
    if "ret" in e and e["ret"] is not None:
        parts.append(f"-> {e['ret']}")
    extra = {k: v for k, v in e.items() if k not in {"time_ns", "time", "cpu", "event", "map", "key", "ret"}}
    if extra:
        parts.append(" ".join(f"{k}={v}" for k, v in extra.items()))
    return "  ".join(parts)
