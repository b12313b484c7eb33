"""Abstract register values of the verifier, and what it knows about the maps a program uses.

Job: the vocabulary of `verifier.checker` — immutable, hashable values so that whole states
can be compared for pruning.  Must not execute code or import `vm`/`runtime`.

The names follow the kernel's `enum bpf_reg_type` (include/linux/bpf.h) and the way
`print_verifier_state` spells them (`fp`, `map_value`, `map_value_or_null`, `scalar`, ...),
because those spellings appear verbatim in the kernel's messages we reproduce.
"""

from __future__ import annotations

from dataclasses import dataclass

S64_MIN = -(1 << 63)
S64_MAX = (1 << 63) - 1


@dataclass(frozen=True)
class MapInfo:
    """What the verifier needs to know about one map, as created (libbpf may have dropped BTF).

    `timer_off` is the offset of the map value's valid `bpf_timer` record (None when the value
    has none, or when `btf_parse_fields` rejected the record, e.g. two timers).
    """

    name: str
    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int = 0
    has_btf: bool = False
    timer_off: int | None = None
    spin_lock_off: int | None = None
    inner: MapInfo | None = None


@dataclass(frozen=True)
class Reg:
    """One abstract register (or spilled stack slot) value.

    kind: one of NOT_INIT, SCALAR, CTX, FP (stack), MAP_PTR (CONST_PTR_TO_MAP), MAP_VALUE,
    MAP_VALUE_OR_NULL, MAP_PTR_OR_NULL (inner map from a map-in-map lookup), MAP_KEY, FUNC,
    MEM_OR_NULL / MEM (ringbuf records), PTR (any other pointer we do not model: packet,
    socket, task...; never the cause of a rejection).
    """

    kind: str
    smin: int = S64_MIN
    smax: int = S64_MAX
    off: int = 0
    var: bool = False           # the pointer has a variable (non-constant) offset part
    map: MapInfo | None = None
    id: int = 0                 # for *_OR_NULL: registers with the same id are null-checked together
    uid: int = 0                # map_uid (non-zero for values of inner maps), verifier.c: map_uid
    frame: int = 0              # FP: entry insn of the function whose stack frame it points into

    @property
    def is_const(self) -> bool:
        return self.kind == SCALAR and self.smin == self.smax

    def type_name(self) -> str:
        """The kernel's reg_type_str() spelling, used in `R1 type=%s expected=%s`."""
        return _TYPE_NAMES.get(self.kind, "ptr")


NOT_INIT = "not_init"
SCALAR = "scalar"
CTX = "ctx"
FP = "fp"
MAP_PTR = "map_ptr"
MAP_VALUE = "map_value"
MAP_VALUE_OR_NULL = "map_value_or_null"
MAP_PTR_OR_NULL = "map_ptr_or_null"
MAP_KEY = "map_key"
FUNC = "func"
MEM = "mem"
MEM_OR_NULL = "mem_or_null"
PTR = "ptr"

_TYPE_NAMES = {
    NOT_INIT: "?", SCALAR: "scalar", CTX: "ctx", FP: "fp", MAP_PTR: "map_ptr",
    MAP_VALUE: "map_value", MAP_VALUE_OR_NULL: "map_value_or_null",
    MAP_PTR_OR_NULL: "map_ptr_or_null", MAP_KEY: "map_key", FUNC: "func", MEM: "mem",
    MEM_OR_NULL: "mem_or_null", PTR: "ptr",
}

UNINIT = Reg(NOT_INIT)
UNKNOWN = Reg(SCALAR)


def const(value: int) -> Reg:
    """A scalar known to be `value` (as a signed 64-bit number)."""
    value &= (1 << 64) - 1
    if value >= 1 << 63:
        value -= 1 << 64
    return Reg(SCALAR, value, value)


def scalar_range(lo: int, hi: int) -> Reg:
    return Reg(SCALAR, max(lo, S64_MIN), min(hi, S64_MAX))
