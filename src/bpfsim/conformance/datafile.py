"""The bpf_conformance `.data` file format: text -> `DataFile` (program, memory, expectation).

Job: parse exactly as upstream's runner does (see /work/shared/conformance/FORMAT.md and
bpf_conformance src/bpf_test_parser.cc): comments from the first `#`, directives matched by
substring in a fixed order, `raw` replacing `asm`, `mem` as hex bytes, `result` as a full
64-bit value.  Must not run anything (that is `conformance.runner`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bpfsim.errors import ParseError
from bpfsim.isa.asm import assemble
from bpfsim.isa.insn import Instruction, decode_slots

# Upstream matches a directive line by substring, in this order; the first match wins.
_DIRECTIVES = (("asm", "asm"), ("result", "result"), ("mem", "mem"), ("raw", "raw"),
               ("no register offset", "no register offset"), (" c", "c"), ("error", "error"))


@dataclass
class DataFile:
    """One test.  `skip` is set (with the reason) when upstream's runner would skip the file."""

    name: str
    asm: list[str] = field(default_factory=list)
    raw: list[int] | None = None
    mem: bytes = b""
    result: int | None = None
    error: str | None = None
    skip: str | None = None

    def program(self) -> list[Instruction]:
        """The instructions, one per slot: the `raw` words if present, else the assembled asm."""
        if self.raw is not None:
            data = b"".join((w & ((1 << 64) - 1)).to_bytes(8, "little") for w in self.raw)
            return decode_slots(data)
        return assemble("\n".join(self.asm), dialect="conformance")


def _number(token: str, what: str, name: str) -> int:
    try:
        return int(token, 16) if token.lower().startswith("0x") else int(token, 10)
    except ValueError:
        raise ParseError(f"{name}: bad {what} {token!r}") from None


def parse(text: str, name: str = "<data>") -> DataFile:
    """Parse the text of a `.data` file.  Raises ParseError for malformed numbers."""
    out = DataFile(name)
    section: str | None = None
    result_line: str | None = None
    error_line: str | None = None
    mem_tokens: list[str] = []
    raw_tokens: list[str] | None = None
    for line in text.split("\n"):
        line = line.rstrip("\r")
        hash_at = line.find("#")
        if hash_at >= 0:
            line = line[:hash_at]
        if not line.strip():
            continue
        if "--" in line:
            section = next((sec for key, sec in _DIRECTIVES if key in line), None)
            if section is None:
                out.skip = f"unknown directive {line.strip()!r}"
                section = "?"
            elif section == "raw" and raw_tokens is None:
                raw_tokens = []
            continue
        if section == "asm":
            out.asm.append(line.strip())
        elif section == "result":
            result_line = line.strip()
        elif section == "error":
            error_line = line.strip()
        elif section == "mem":
            mem_tokens.extend(line.split())
        elif section == "raw":
            raw_tokens.extend(line.split())  # type: ignore[union-attr]
    if result_line is not None:
        if "0x" in result_line.lower():
            out.result = _number(result_line, "result", name) & ((1 << 64) - 1)
        else:
            out.result = _number(result_line, "result", name)
            if out.result < 0:
                raise ParseError(f"{name}: result {result_line!r} is not unsigned")
    out.error = error_line
    try:
        out.mem = bytes(int(t, 16) for t in mem_tokens)
    except ValueError as exc:
        raise ParseError(f"{name}: bad mem byte ({exc})") from None
    if raw_tokens is not None:
        out.raw = [_number(t, "raw word", name) for t in raw_tokens]
    if out.result is None and out.error is None and out.skip is None:
        out.skip = "no result or error section"
    if not out.asm and out.raw is None and out.skip is None:
        out.skip = "no instructions"
    return out


def load(path: str | Path) -> DataFile:
    """Read and parse one `.data` file (OSError propagates; the CLI reports it)."""
    p = Path(path)
    return parse(p.read_text(encoding="utf-8", errors="replace"), p.name)
