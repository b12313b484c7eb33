"""Helpers with the kernel's numbers and semantics: one fixture program (helpers.bpf.c) writes
each helper's result into `res[]` in .bss; the emulator and the kernel must agree."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

import bpfsim
from bpfsim.errors import NotSupported
from bpfsim.runtime.helpers import helper_table, implemented
from bpfsim.uapi.helper_ids import HELPER_IDS
from bpfsim.uapi.helper_protos import HELPER_PROTOS

ROOT = Path(__file__).resolve().parents[2]
OBJ = str(ROOT / "tests" / "fixtures" / "runtime" / "helpers.bpf.o")
PKT = (ROOT / "bench" / "pkt_64.bin").read_bytes()
EINVAL = (1 << 64) - 22


def run(coll) -> tuple[int, list[int]]:
    r = coll.programs["helpers"].test_run(data=PKT)
    return r.retval, list(struct.unpack("<30Q", coll.maps[".bss"].raw[b"\0\0\0\0"]))


def test_same_results_as_the_kernel(backend) -> None:
    retval, res = run(backend.load(OBJ))
    assert retval == 42 and res[23] == 77 and res[22] == 1   # tail call into slot 0
    assert res[0:3] == [10, 45, EINVAL]                       # bpf_loop: early stop, flags
    assert res[3:5] == [3, 600]                               # bpf_for_each_map_elem
    assert res[5] == 11                                       # queue pop is FIFO
    assert res[6] == 0 and res[7] == 48                       # ringbuf output/reserve, prod pos
    assert res[14] < backend.ncpus
    assert res[15:18] == [6, (1 << 64) - 31, 0]               # strtol " -0x1f!", strncmp
    assert res[18] == 5                                       # spin-locked add
    assert res[19:21] == [0xAAAA, 0x7777]                     # csum_diff: 16-bit fold, any size
    assert res[21] == 1                                       # two prandom values differ
    assert res[24:30] == [0, 0x1122334455667788, (1 << 64) - 34, 0, 4, 0]   # NULL: -ERANGE (x86)


def test_ringbuf_records_in_order(backend) -> None:
    coll = backend.load(OBJ)
    run(coll)
    assert coll.maps["rb"].drain() == [struct.pack("<I", 22), struct.pack("<II", 0xAABBCCDD, 1)]


def test_current_task_clock_and_rng_are_the_runtime_s() -> None:
    rt = bpfsim.Runtime(task=bpfsim.Task(comm="worker", pid=77, tgid=70, uid=1000, gid=100), seed=5)
    coll = rt.load(OBJ)
    _, res = run(coll)
    assert res[8] == (70 << 32) | 77
    assert res[9] == (100 << 32) | 1000
    assert struct.pack("<QQ", res[10], res[11]).rstrip(b"\0") == b"worker"
    assert res[12] == rt.clock.now() and res[13] == rt.clock.boottime()
    rt.clock.advance(bpfsim.ms(3))
    _, res2 = run(coll)
    assert res2[12] - res[12] == bpfsim.ms(3)
    rt.close()


def test_prandom_is_reproducible_from_the_seed() -> None:
    def values(seed: int) -> list[int]:
        rt = bpfsim.Runtime(seed=seed)
        fn = rt.helpers[HELPER_IDS["bpf_get_prandom_u32"]]
        env = type("Env", (), {"program": type("P", (), {"kernel": rt})(), "cpu": 0, "mem": rt.mem})()
        out = [fn(env, 0, 0, 0, 0, 0) for _ in range(4)]
        rt.close()
        return out

    assert values(1) == values(1) != values(2)


def test_unimplemented_helper_is_named() -> None:
    table = helper_table()
    assert set(table) == set(HELPER_IDS.values())
    with pytest.raises(NotSupported, match="bpf_clone_redirect"):
        table[HELPER_IDS["bpf_clone_redirect"]](None, 0, 0, 0, 0, 0)


def test_every_implemented_helper_has_a_prototype() -> None:
    names = {p.name for p in HELPER_PROTOS.values()}
    assert set(implemented()) <= names
    assert HELPER_PROTOS[HELPER_IDS["bpf_timer_init"]].gpl_only
    assert HELPER_PROTOS[HELPER_IDS["bpf_trace_printk"]].args == ("ARG_PTR_TO_MEM|MEM_RDONLY",
                                                                  "ARG_CONST_SIZE")
