"""Shared helpers of the isa tests: fixture paths and the conformance `.data` asm sections.
(A plain module, not a conftest, so its name cannot clash with other packages' conftests.)"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
FIXTURES = HERE.parent / "fixtures" / "isa"
CONFORMANCE = Path("/work/shared/conformance/tests")
_REPO_CONF = HERE.parent / "conformance" / "data"


def conformance_files() -> list[Path]:
    for d in (_REPO_CONF, CONFORMANCE):
        files = sorted(d.rglob("*.data")) if d.is_dir() else []
        if files:
            return files
    return []


def asm_and_raw(path: Path) -> tuple[str, list[int]]:
    """The `-- asm` text and the `-- raw` words of a .data file (FORMAT.md's section rules)."""
    section = None
    asm: list[str] = []
    raw: list[int] = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].rstrip("\r")
        if not line.strip():
            continue
        if "--" in line:
            section = next((n for n in ("asm", "result", "mem", "raw", "no register offset", " c",
                                        "error") if n in line), None)
            continue
        if section == "asm":
            asm.append(line)
        elif section == "raw":
            raw += [int(t, 16) if t.startswith("0x") else int(t) for t in line.split()]
    return "\n".join(asm), raw
