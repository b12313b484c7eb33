"""Idle flows disappear after 30 s: the virtual clock makes that a few lines."""

import struct
from pathlib import Path

import bpfsim
from bpfsim import s

OBJ = str(Path(__file__).with_name("flow_expiry.bpf.o"))


def udp(sport: int, dport: int) -> bytes:
    eth = b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00"
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 36, 0, 0, 64, 17, 0, b"\n\0\0\1", b"\n\0\0\2")
    return eth + ip + struct.pack("!HHHH", sport, dport, 16, 0) + b"payload!"


def test_idle_flow_expires():
    with bpfsim.Runtime() as rt:
        coll = rt.load(OBJ)
        coll.programs["track"].test_run(data=udp(1111, 53))
        assert len(coll.maps["flows"].raw) == 1
        rt.clock.advance(s(30))
        assert len(coll.maps["flows"].raw) == 0
