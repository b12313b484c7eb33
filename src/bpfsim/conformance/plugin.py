"""The bpf_conformance plugin protocol, so upstream's `bpf_conformance_runner` can drive bpfsim.

Job: speak the protocol of upstream's plugins (libbpf_plugin.cc, ubpf_plugin.cc): the runner
starts `plugin [--program HEX] [MEMHEX] [options]`, writes the program as base-16 bytes
separated by spaces on one line of stdin (unless `--program` gave it), and passes the input
memory the same way as the first non-option argument (possibly empty).  The plugin prints r0
in lowercase hex on stdout and exits 0; on failure it writes the error to stderr and exits
non-zero.  Must not import `cli` (the CLI wraps this).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TextIO

from bpfsim.conformance.runner import run_program
from bpfsim.errors import BpfError, ParseError
from bpfsim.isa.insn import decode_slots

USAGE = ("usage: bpfsim conformance --plugin [--program <base16 program bytes>] "
         "[<base16 memory bytes>] [--debug]")


def base16_decode(text: str) -> bytes:
    """Bytes from space-separated hex tokens; tokens that are not hex are ignored (upstream's
    base16_decode does the same)."""
    out = bytearray()
    for token in text.split():
        try:
            out.append(int(token, 16) & 0xFF)
        except ValueError:
            continue
    return bytes(out)


def main(args: Sequence[str], stdin: TextIO, stdout: TextIO, stderr: TextIO) -> int:
    """Run the plugin protocol; returns the process exit status."""
    rest = list(args)
    debug = False
    program_text: str | None = None
    if rest and rest[0] == "--help":
        print(USAGE, file=stdout)
        return 1
    if len(rest) > 1 and rest[0] == "--program":
        program_text = rest[1]
        rest = rest[2:]
    memory_text = ""
    if rest and not rest[0].startswith("--"):
        memory_text = rest.pop(0)
    if rest and rest[0] == "--debug":
        debug = True
        rest.pop(0)
    rest = [a for a in rest if a.strip()]   # the runner passes plugin options, often ""
    if rest:
        print(f"Unexpected arguments: {rest[0]}", file=stderr)
        return 1
    if program_text is None:
        program_text = stdin.readline()
    try:
        insns = decode_slots(base16_decode(program_text))
        if not insns:
            raise ParseError("empty program")
        r0 = run_program(insns, base16_decode(memory_text))
    except BpfError as exc:
        print(f"{exc}", file=stderr)
        if debug:
            print(f"program: {program_text.strip()}\nmemory: {memory_text.strip()}", file=stderr)
        return 1
    print(f"{r0:x}", file=stdout)
    return 0
