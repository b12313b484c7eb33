"""Run bpf_conformance tests: one program + input memory -> r0, and `.data` files -> results.

Job: the machine state the suite assumes (r1 = pointer to a private writable copy of `mem` or
0, r2 = its length, a fresh 512-byte stack, helper #5 returning normally) and the comparison
of r0 with `result` as a full 64-bit value.  The engine is a parameter so every engine can run
the suite.  Must not import `runtime` (the suite needs no maps; helper #5 is local).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bpfsim.conformance.datafile import DataFile, load
from bpfsim.errors import BpfError, UsageError
from bpfsim.isa.insn import Instruction
from bpfsim.vm.env import ExecEnv
from bpfsim.vm.interpreter import Interpreter
from bpfsim.vm.memory import AddressSpace

DEFAULT_BUDGET = 1_000_000


def _ktime_get_ns(env: ExecEnv, *_: int) -> int:
    """Helper #5 on Linux (bpf_ktime_get_ns); the suite only needs it to return normally."""
    return time.monotonic_ns()


HELPERS = {5: _ktime_get_ns}

# An engine factory: (insns, mem, helpers) -> an object with run(r1, r2) -> r0.
EngineFactory = Callable[[Sequence[Instruction], AddressSpace, dict], Any]


def interpreter_engine(insns: Sequence[Instruction], mem: AddressSpace, helpers: dict) -> Any:
    return Interpreter(insns, mem=mem, helpers=helpers, name="conformance", budget=DEFAULT_BUDGET)


def run_program(insns: Sequence[Instruction], memory: bytes = b"", *,
                engine: EngineFactory = interpreter_engine) -> int:
    """Run one program with the suite's calling convention and return the full 64-bit r0."""
    mem = AddressSpace()
    r1 = 0
    if memory:
        r1 = mem.map(bytearray(memory), name="mem", kind="mem").base
    return engine(insns, mem, dict(HELPERS)).run(r1, len(memory))


@dataclass
class TestResult:
    """The outcome of one `.data` file (`skipped` tests count as neither passed nor failed)."""

    file: str
    ok: bool
    expected: int | None = None
    got: int | None = None
    error: str | None = None
    skipped: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"file": self.file, "ok": self.ok,
                "expected": None if self.expected is None else hex(self.expected),
                "got": None if self.got is None else hex(self.got),
                "error": self.error}


def run_case(case: DataFile, *, engine: EngineFactory = interpreter_engine) -> TestResult:
    """Run one parsed test and judge it as upstream does (a run error passes only if the file
    expects that exact error text)."""
    if case.skip:
        return TestResult(case.name, True, case.result, skipped=case.skip)
    try:
        got = run_program(case.program(), case.mem, engine=engine)
    except BpfError as exc:
        message = str(exc)
        if case.error is not None and message.splitlines()[0].rstrip() == case.error:
            return TestResult(case.name, True, error=message)
        return TestResult(case.name, False, case.result, error=message)
    if case.error is not None:
        return TestResult(case.name, False, case.result, got,
                          error=f"expected error {case.error!r}, program returned")
    return TestResult(case.name, got == case.result, case.result, got)


def expand(paths: Iterable[str | Path]) -> list[Path]:
    """Files named directly, plus the `*.data` files of named directories (sorted).  A path
    that does not exist is a UsageError."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(p.glob("*.data")))
        elif p.is_file():
            out.append(p)
        else:
            raise UsageError(f"{p}: no such file or directory")
    return out


def run_file(path: str | Path, *, engine: EngineFactory = interpreter_engine) -> TestResult:
    """Load and run one `.data` file; a file that cannot be parsed is a failed test."""
    try:
        case = load(path)
    except BpfError as exc:
        return TestResult(Path(path).name, False, error=str(exc))
    return run_case(case, engine=engine)


def run_paths(paths: Iterable[str | Path], *,
              engine: EngineFactory = interpreter_engine) -> list[TestResult]:
    """Every test under `paths`, in order.  Unreadable files raise OSError/UsageError up front."""
    files = expand(paths)
    for f in files:
        with open(f, "rb"):
            pass
    return [run_file(f, engine=engine) for f in files]
