"""Constants of linux/bpf.h and libbpf: opcodes' numbers, map/prog/attach types, helper ids and
prototypes, the SEC() table.  No logic lives here."""

from bpfsim.uapi.constants import AttachType, Cmd, MapType, ProgType

__all__ = ["AttachType", "Cmd", "MapType", "ProgType"]
