"""`bpfsim conformance PATH... [--json]` and `bpfsim conformance --plugin [MEMHEX]`.

Job: command-line shape only; the work is in `bpfsim.conformance`.  Text output: one line per
failing test, then `N passed, M failed` (plus `, K skipped` when upstream would skip some).
Exit 0 when all pass, 1 when any fails, 2 for bad usage or unreadable paths.  With `--plugin`
it is a bpf_conformance plugin (use a two-line wrapper script as the runner's
`--plugin_path`: `exec bpfsim conformance --plugin "$@"`).
"""

from __future__ import annotations

import json
import sys

import click

from bpfsim.conformance import plugin, run_paths
from bpfsim.errors import UsageError


@click.command("conformance", context_settings={"ignore_unknown_options": True})
@click.argument("paths", nargs=-1, type=click.UNPROCESSED)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("--plugin", "as_plugin", is_flag=True,
              help="Act as a bpf_conformance plugin: program hex on stdin, memory hex as argument, "
                   "r0 in hex on stdout.")
def command(paths: tuple[str, ...], as_json: bool, as_plugin: bool) -> None:
    """Run bpf_conformance `.data` files (files or directories of them)."""
    if as_plugin:
        sys.exit(plugin.main(paths, sys.stdin, sys.stdout, sys.stderr))
    if not paths:
        raise UsageError("conformance: give at least one .data file or directory")
    for p in paths:
        if p.startswith("--"):
            raise UsageError(f"conformance: unknown option {p}")
    try:
        results = run_paths(paths)
    except OSError as exc:
        raise UsageError(f"{exc.filename or exc}: {exc.strerror or exc}") from None
    ran = [r for r in results if not r.skipped]
    passed = sum(r.ok for r in ran)
    failed = len(ran) - passed
    if as_json:
        click.echo(json.dumps({"passed": passed, "failed": failed,
                               "skipped": len(results) - len(ran),
                               "results": [r.as_json() for r in ran]}, indent=2))
    else:
        for r in ran:
            if not r.ok:
                if r.error:
                    click.echo(f"FAIL {r.file}: {r.error}")
                else:
                    click.echo(f"FAIL {r.file}: expected {r.expected:#x}, got {r.got:#x}")
        skipped = len(results) - len(ran)
        click.echo(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
    if failed:
        sys.exit(1)
