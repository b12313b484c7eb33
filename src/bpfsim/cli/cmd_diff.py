"""`bpfsim diff OBJ`: run the same inputs on the emulator and on the kernel; show every difference.

Exit 0 when equal, 1 on any difference, 2 on bad usage.  `--scenario FILE` drives a multi-step
story (runs, map writes, advances, pins, closes) instead of a single run.
"""

from __future__ import annotations

import json

import click

import bpfsim
from bpfsim.cli.main import exit_with
from bpfsim.cli.options import emit_json, read_bytes, run_options
from bpfsim.diff import default_scenario, load_scenario
from bpfsim.diff.compare import explain, run_diff_steps


@click.command("diff")
@run_options
@click.option("--scenario", "scenario_file", metavar="FILE",
              help="A YAML/JSON scenario of steps to drive through both backends.")
@click.option("-v", "--verbose", is_flag=True, help="Also print what each step observed.")
@click.option("--ignore", multiple=True, metavar="MAP.FIELD",
              help="A field that legitimately differs (a clock reading): MAP.FIELD[.SUB|.INDEX], "
                   "MAP.@raw (compare through BTF only) or retval/data_out/ctx_out; repeatable.")
def command(obj: str, prog: str | None, data: str | None, ctx: str | None, repeat: int,
            advance: int | None, as_json: bool, scenario_file: str | None,
            ignore: tuple[str, ...], verbose: bool) -> None:
    """Compare the emulator with the running kernel on OBJ."""
    read_bytes(data, "data")
    read_bytes(ctx, "ctx")
    spec = bpfsim.load_spec(obj)
    if prog is not None and prog not in spec.programs:
        raise click.BadParameter(f"no program named {prog!r} (programs: {', '.join(spec.programs)})",
                                 param_hint="--prog")
    if scenario_file:
        scenario = load_scenario(scenario_file)
    else:
        if prog is None and len(spec.programs) > 1:
            raise click.BadParameter(f"{len(spec.programs)} programs ({', '.join(spec.programs)}); "
                                     "choose one", param_hint="--prog")
        scenario = default_scenario(prog, data, ctx, repeat, advance)
    diffs, steps = run_diff_steps(spec, scenario, ignore=ignore)
    if as_json:
        emit_json({"equal": not diffs, "differences": [d.to_dict() for d in diffs], "steps": steps})
        if diffs:
            exit_with(1)
        return
    if verbose:
        for s in steps:
            shown = {k: v for k, v in s["sim"].items() if k != "maps"}
            click.echo(f"step {s['step']}: {json.dumps(shown, default=str)}")
    if not diffs:
        click.echo("equal")
    else:
        click.echo(f"{len(diffs)} difference{'s' if len(diffs) != 1 else ''}:")
        for d in diffs:
            click.echo(f"  step {d.step}: {d.what}")
            for line in explain(d):
                click.echo(f"    {line}")
    if diffs:
        exit_with(1)
