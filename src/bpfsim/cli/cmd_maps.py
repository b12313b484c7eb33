"""`bpfsim maps dump OBJ|PIN`: map contents in the shape of `bpftool map dump -j`.

OBJ: the maps of an object file as the emulator creates them (global data filled, `.values`
resolved), before any program runs.  PIN: a map pinned in the kernel's bpffs, read through the
kernel backend.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

import bpfsim
import bpfsim.kernel
from bpfsim.cli.options import emit_json, not_a_file
from bpfsim.errors import UsageError


@click.group("maps")
def command() -> None:
    """Inspect maps."""


@command.command("dump")
@click.argument("target")
@click.option("--map", "map_name", metavar="NAME", help="Only this map of OBJ.")
@click.option("--json", "as_json", is_flag=True, help="Print bpftool's JSON shape.")
def dump(target: str, map_name: str | None, as_json: bool) -> None:
    """Dump the maps of OBJ (an object file) or the map pinned at PIN."""
    path = Path(target)
    if _is_bpffs_path(path):
        handle = bpfsim.kernel.get_pinned(str(path))
        if not hasattr(handle, "dump"):     # a pinned program
            handle.close()
            raise UsageError(f"{target} is a pinned program, not a map")
        try:
            dumps = {path.name: handle.dump()}
        finally:
            handle.close()
    else:
        why = not_a_file(path)
        if why:
            raise click.BadParameter(f"{target}: {why}", param_hint="OBJ|PIN")
        # programs are loaded unverified: a rejected program must not hide the maps
        with bpfsim.Runtime() as rt, rt.load(path, verify=False) as coll:
            if map_name is not None and map_name not in coll.maps:
                raise click.BadParameter(f"no map named {map_name!r} (maps: {', '.join(coll.maps)})",
                                         param_hint="--map")
            dumps = {name: m.dump() for name, m in coll.maps.items() if map_name in (None, name)}
    if as_json:
        emit_json(dumps if map_name is None and len(dumps) != 1 else next(iter(dumps.values())))
        return
    for name, entries in dumps.items():
        click.echo(f"{name}: {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}")
        for entry in entries:
            shown = entry.get("formatted", entry) if isinstance(entry, dict) else entry
            click.echo("  " + json.dumps(shown))


def _is_bpffs_path(path: Path) -> bool:
    return str(path).startswith("/sys/fs/bpf/")
