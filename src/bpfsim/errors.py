"""The exception hierarchy of bpfsim: one base, typed subclasses that carry a location.

Must not import anything else of bpfsim (it is the bottom layer).  Every error a user
can provoke with bad input is a `BpfError`; the CLI turns them into one line and exit 2.
"""

from __future__ import annotations


class BpfError(Exception):
    """Base of every error bpfsim raises on purpose."""


class ParseError(BpfError):
    """Malformed input: ELF, BTF, assembly text, raw bytecode.

    `offset` is a byte offset (or instruction index for bytecode, see `insn`) and
    `section` the ELF section it was found in, when known.
    """

    def __init__(self, message: str, *, offset: int | None = None, section: str | None = None,
                 insn: int | None = None) -> None:
        loc = []
        if section is not None:
            loc.append(f"section {section}")
        if insn is not None:
            loc.append(f"insn {insn}")
        if offset is not None:
            loc.append(f"offset {offset:#x}")
        super().__init__(f"{message} ({', '.join(loc)})" if loc else message)
        self.message = message
        self.offset = offset
        self.section = section
        self.insn = insn


class LinkError(BpfError):
    """A reference that cannot be resolved: unknown map, missing subprogram, bad relocation."""


class VerifierError(BpfError):
    """The verifier rejected a program.  `str()` gives the tail of the log, like the kernel.

    `errno` is the (positive) error the kernel's BPF_PROG_LOAD would have failed with.
    """

    def __init__(self, message: str, *, program: str | None = None, pc: int | None = None,
                 log: str = "", errno: int = 13) -> None:
        super().__init__(message)
        self.message = message
        self.program = program
        self.pc = pc
        self.log = log or message
        self.errno = errno

    def __str__(self) -> str:
        prefix = f"program {self.program}: " if self.program else ""
        tail = "\n".join(self.log.rstrip("\n").splitlines()[-5:])
        return prefix + (tail or self.message)


class MemoryFault(BpfError):
    """An access outside every region, or an illegal access inside one, at run time."""

    def __init__(self, message: str, *, program: str | None = None, pc: int | None = None,
                 address: int | None = None) -> None:
        where = f" at pc {pc}" if pc is not None else ""
        who = f" in {program}" if program else ""
        super().__init__(f"{message}{who}{where}")
        self.message = message
        self.program = program
        self.pc = pc
        self.address = address


class ExecutionError(BpfError):
    """A run stopped for a reason other than memory: budget exhausted, call depth, bad helper."""

    def __init__(self, message: str, *, program: str | None = None, pc: int | None = None) -> None:
        where = f" at pc {pc}" if pc is not None else ""
        who = f" in {program}" if program else ""
        super().__init__(f"{message}{who}{where}")
        self.message = message
        self.program = program
        self.pc = pc


class InstructionBudgetExceeded(ExecutionError):
    """More instructions executed than the configured budget (default 1,000,000)."""


class KeyNotFound(BpfError, KeyError):
    """A map lookup or delete on a key that is not there (the kernel's -ENOENT)."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep a readable message
        return Exception.__str__(self)


class MapError(BpfError):
    """A map operation the kernel refuses; `errno` is the positive errno it would return."""

    def __init__(self, message: str, errno: int) -> None:
        super().__init__(message)
        self.errno = errno


class MapFull(MapError):
    """No room for a new element (-E2BIG)."""

    def __init__(self, message: str = "map is full", errno: int = 7) -> None:
        super().__init__(message, errno)


class PinError(BpfError):
    """A bpffs path problem: nothing pinned there, already pinned, not a bpffs path."""


class NotSupported(BpfError):
    """This kernel (or bpfsim) cannot do `feature`; `min_kernel` is the first kernel that can."""

    def __init__(self, feature: str, min_kernel: str | None = None, detail: str = "") -> None:
        msg = f"not supported: {feature}"
        if min_kernel:
            msg += f" (needs Linux {min_kernel} or later)"
        if detail:
            msg += f": {detail}"
        super().__init__(msg)
        self.feature = feature
        self.min_kernel = min_kernel


class KernelError(BpfError):
    """A bpf(2) (or other OS) call failed: `command` and the positive `errno`."""

    def __init__(self, command: str, errno: int, detail: str = "") -> None:
        import os

        msg = f"{command}: {os.strerror(errno)} (errno {errno})"
        if detail:
            msg += f": {detail}"
        super().__init__(msg)
        self.command = command
        self.errno = errno


class UsageError(BpfError):
    """Bad arguments to an API or CLI call."""


class CallbackError(BpfError):
    """A Python callback (user helper, hook) raised during a run; the cause is attached."""
