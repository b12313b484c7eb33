"""Loaded programs: the kernel object (`LoadedProgram`, a `BpfProg`) and the user handle (`Program`).

Job: a `LoadedProgram` is what BPF_PROG_LOAD leaves in the kernel: the executable
instructions (map addresses already in the lddw imm64s), the maps it holds (refcnt only), the
bound engine, `execute(ctx_addr, cpu)` under the CPU's lock.  It is also the VM's tail-call
target and the `env.program` helpers see.  A `Program` is a user reference to it (an fd):
`test_run`, `pin`, `info`, `close`.
Must not import `kernel` (the real one).
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

from bpfsim.errors import UsageError
from bpfsim.isa.insn import Instruction, encode_slots
from bpfsim.runtime.kobject import BpfProg
from bpfsim.runtime.testrun import TestRunner, TestRunResult
from bpfsim.runtime.trace import FLAGS_PROG_RUN
from bpfsim.uapi.constants import BPF_PSEUDO_MAP_FD, BPF_PSEUDO_MAP_VALUE, ProgType
from bpfsim.vm.interpreter import Interpreter


class LoadedProgram(BpfProg):
    """A program in the emulated kernel."""

    def __init__(self, kernel: Any, spec: Any, insns: list[Instruction], maps: list[Any],
                 kfuncs: dict[int, Any] | None = None) -> None:
        super().__init__(kernel, spec.name, int(spec.type))
        self.spec = spec
        self.insns = insns
        self.expected_attach_type = int(spec.expected_attach_type)
        self.license = spec.license
        self.section = spec.section
        for m in maps:
            self.use_map(m)
        self.engine: Interpreter | None = Interpreter(insns, mem=kernel.mem, helpers=kernel.helpers,
                                                      kfuncs=kfuncs or {}, name=spec.name, program=self,
                                                      budget=kernel.insn_budget)
        self.run_count = 0
        self.verifier_log = ""            # set by the loader: the log of the accepted program
        # bpf_prog_aux.max_ctx_offset: the furthest ctx byte the verifier saw the program touch
        self.max_ctx_offset = 0

    # -- execution ------------------------------------------------------------------------------
    def execute(self, ctx_addr: int, cpu: int, trace_flags: str = FLAGS_PROG_RUN) -> tuple[int, int]:
        """Run once with r1 = ctx_addr on `cpu`, holding that CPU's lock (and, inside it, the
        trace context flags of the caller); (r0, insns executed)."""
        engine = self.engine
        if engine is None:
            raise UsageError(f"program '{self.name}' is freed")
        kernel = self.kernel
        trace = kernel.trace
        with kernel.cpu_locks[cpu]:
            trace.push(cpu, trace_flags)
            kernel.rcu_read_lock()
            try:
                r0 = engine.run(ctx_addr, program=self, cpu=cpu)
            finally:
                kernel.rcu_read_unlock()
                trace.pop(cpu)
            self.run_count += 1
            return r0, engine.last_insn_count

    def call_function(self, func_ptr_index: int, args: tuple[int, ...], cpu: int) -> int:
        """Run a callback subprogram of this program (timer callbacks fired by the clock)."""
        if self.engine is None:
            raise UsageError(f"program '{self.name}' is freed")
        return self.engine.call_function(func_ptr_index, args, program=self, cpu=cpu)

    def release(self) -> None:
        self.engine = None

    # -- identity -------------------------------------------------------------------------------
    @property
    def tag(self) -> str:
        """The kernel's prog tag (core.c: bpf_prog_calc_tag): the first 8 bytes of the SHA-256
        (SHA-1 before 6.18's switch) of the instructions with map references cleared, in hex."""
        out: list[Instruction] = []
        clear_next = False
        for i in self.insns:
            if clear_next:
                out.append(replace(i, imm=0))
                clear_next = False
            elif i.opcode == 0x18 and i.src in (BPF_PSEUDO_MAP_FD, BPF_PSEUDO_MAP_VALUE):
                out.append(replace(i, imm=0))
                clear_next = True
            else:
                out.append(i)
        return hashlib.sha256(encode_slots(out)).hexdigest()[:16]

    @property
    def type_name(self) -> str:
        try:
            return ProgType(self.prog_type).name.lower()
        except ValueError:
            return str(self.prog_type)

    def info(self) -> dict[str, Any]:
        """BPF_OBJ_GET_INFO_BY_FD, the parts that mean something here."""
        return {"id": self.id, "name": self.name[:15], "type": self.type_name, "tag": self.tag,
                "insns": len(self.insns), "map_ids": [m.id for m in self.used_maps],
                "gpl_compatible": self.kernel.gpl_compatible(self.license),
                "run_cnt": self.run_count}


class Program:
    """A user reference to a loaded program (like an fd); closing it drops the reference."""

    def __init__(self, prog: LoadedProgram, *, owned: bool = True) -> None:
        if not owned:
            prog.inc()
        self._prog: LoadedProgram | None = prog

    @property
    def kobject(self) -> LoadedProgram:
        if self._prog is None:
            raise UsageError("program handle is closed")
        return self._prog

    # -- identity -------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.kobject.name

    @property
    def type(self) -> int:
        return self.kobject.prog_type

    @property
    def id(self) -> int:
        return self.kobject.id

    @property
    def insns(self) -> list[Instruction]:
        """The executable instructions (one per 8-byte slot)."""
        return self.kobject.insns

    @property
    def insn_count(self) -> int:
        return len(self.kobject.insns)

    @property
    def info(self) -> dict[str, Any]:
        return self.kobject.info()

    @property
    def verifier_log(self) -> str:
        """The verifier's log for this program ("" when loaded with verify=False)."""
        return self.kobject.verifier_log

    # -- actions --------------------------------------------------------------------------------
    def test_run(self, data: bytes | None = None, ctx: Any = None, repeat: int = 1, cpu: int = 0,
                 flags: int = 0) -> TestRunResult:
        """BPF_PROG_TEST_RUN (net/bpf/test_run.c rules per program type).  `ctx` is bytes or a
        {field: value} dict (__sk_buff / xdp_md).  Refusals raise KernelError with the errno."""
        if data is not None and not isinstance(data, (bytes, bytearray, memoryview)):
            raise UsageError(f"data must be bytes, not {type(data).__name__}")
        if ctx is not None and not isinstance(ctx, (bytes, bytearray, memoryview, dict)):
            raise UsageError(f"ctx must be bytes or a dict of fields, not {type(ctx).__name__}")
        for what, v in (("repeat", repeat), ("cpu", cpu), ("flags", flags)):
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 0xFFFFFFFF:
                raise UsageError(f"{what} must be an integer in [0, 2**32), not {v!r}")
        return TestRunner(self.kobject).run(data, ctx, repeat, cpu, flags)

    def pin(self, path: str) -> None:
        """BPF_OBJ_PIN: the pin holds its own reference."""
        self.kobject.kernel.pin_object(path, self.kobject)

    def close(self) -> None:
        """Drop this handle's reference (idempotent)."""
        prog, self._prog = self._prog, None
        if prog is not None:
            prog.put()

    @property
    def closed(self) -> bool:
        return self._prog is None

    def __enter__(self) -> Program:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._prog is None:
            return "<Program (closed)>"
        return f"<Program '{self._prog.name}' id={self._prog.id} {self._prog.type_name}>"
