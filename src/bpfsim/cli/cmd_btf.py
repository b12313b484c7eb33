"""`bpfsim btf dump OBJ [--json] [--format raw|c]`: the object's BTF exactly as `bpftool btf
dump file OBJ [format c]` (or `bpftool -j btf dump file OBJ`) prints it.

OBJ is an ELF object with a `.BTF` section, or a raw BTF blob (like bpftool, recognised by the
BTF magic).  The types are shown as stored in the file: DATASEC sizes and offsets are not yet
fixed up (libbpf does that when loading, and bpftool does not when dumping a file).
"""

from __future__ import annotations

import click

from bpfsim.btf import Btf
from bpfsim.btf.cdump import dump_c
from bpfsim.btf.dump import dump_json, dump_raw
from bpfsim.elf.reader import read_elf, read_object_file
from bpfsim.errors import ParseError, UsageError


def read_btf(path: str) -> Btf:
    """The `.BTF` of an object file, or a raw BTF file (bpftool: is_btf_raw)."""
    data = read_object_file(path)
    if data[:2] in (b"\x9f\xeb", b"\xeb\x9f"):
        return Btf.parse(data, "little" if data[:2] == b"\x9f\xeb" else "big")
    elf = read_elf(data)
    sec = elf.section(".BTF")
    if sec is None:
        raise ParseError(f"{path}: no .BTF section")
    return Btf.parse(sec.data, elf.byteorder)


@click.group("btf")
def command() -> None:
    """Inspect BTF type information."""


@command.command("dump")
@click.argument("obj", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print bpftool's -j JSON document.")
@click.option("--format", "fmt", type=click.Choice(["raw", "c"]), default="raw", show_default=True,
              help="raw: one record per type; c: a compilable vmlinux.h-style header.")
def dump(obj: str, as_json: bool, fmt: str) -> None:
    """Print every BTF type of OBJ, in bpftool's raw format (or as C)."""
    if fmt == "c" and as_json:
        raise UsageError("JSON output for C-syntax dump is not supported")   # bpftool's words
    btf = read_btf(obj)
    if fmt == "c":
        click.echo(dump_c(btf), nl=False)
    else:
        click.echo(dump_json(btf) if as_json else dump_raw(btf), nl=False)
