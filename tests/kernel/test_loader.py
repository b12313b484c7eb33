"""bpfsim.kernel.load on this machine's kernel: every fixture, bench values, maps, pins, errors."""

from __future__ import annotations

import contextlib
import os
import struct
from pathlib import Path

import pytest

import bpfsim.kernel as bk
from bpfsim.errors import BpfError, KeyNotFound, MapError, PinError, UsageError, VerifierError
from bpfsim.isa.insn import Instruction
from bpfsim.spec.collection import CollectionSpec, MapSpec, ProgramSpec, Reference
from bpfsim.spec.reader import load_spec
from bpfsim.uapi.constants import MapType, ProgType

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
PATTERNS = ("tests/fixtures/**/*.bpf.o", "examples/**/*.bpf.o", "bench/objects/*.bpf.o")
OBJECTS = sorted(p for pattern in PATTERNS for p in ROOT.glob(pattern))


# Negative verifier fixtures kept outside tests/fixtures/verifier (next to their positive twin).
NEGATIVE_ELSEWHERE = {"timer_sync_stack_sum.bpf.o"}


def _may_be_refused(path: Path) -> bool:
    """Objects built to be refused somewhere: the spec reader's bad objects, the verifier's
    negative timer fixtures, and CO-RE fixtures whose types do not exist in vmlinux (the
    kernel poisons those relocations, as libbpf would).  They must load or fail with a
    BpfError, never anything else, and leak nothing either way."""
    rel = path.relative_to(ROOT).as_posix()
    if "/bad/" in rel or rel.endswith("core.bpf.o") or path.name in NEGATIVE_ELSEWHERE:
        return True
    return rel.startswith("tests/fixtures/verifier/") and path.name != "timer_ok.bpf.o"


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("path", OBJECTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_fixture_loads_or_is_refused_cleanly(path, bpf_pin_dir):
    before = _open_fds()
    if _may_be_refused(path):
        with contextlib.suppress(BpfError):
            bk.load(path, pin_root=bpf_pin_dir).close()
    else:
        with bk.load(path, pin_root=bpf_pin_dir) as coll:
            spec = coll.spec
            assert set(coll.maps) == set(spec.maps)
            assert set(coll.programs) == {n for n, p in spec.programs.items() if p.autoload}
            for m in coll.maps.values():
                assert m.fd >= 0 and m.id > 0
    assert _open_fds() <= before, "every fd is closed after close() or a failed load"


# -- bench objects: the values in bench/README.md ------------------------------------------------

BENCH_VALUES = [
    ("loop_arith", "pkt_64", 200082162), ("loop_arith", "pkt_1500", 200082162),
    ("fnv_packet", "pkt_64", 481572483), ("fnv_packet", "pkt_1500", 2942214908),
    ("parse_packet", "pkt_64", 2176149347), ("parse_packet", "pkt_1500", 2176149347),
    ("hash_map", "pkt_64", 4108211712), ("hash_map", "pkt_1500", 4108211712),
    ("empty", "pkt_64", 0), ("empty", "pkt_1500", 0),
]


@pytest.mark.parametrize("name, packet, expected", BENCH_VALUES)
def test_bench_return_values(name, packet, expected):
    data = (BENCH / f"{packet}.bin").read_bytes()
    with bk.load(BENCH / "objects" / f"{name}.bpf.o") as coll:
        r = coll.programs[f"{name}_xdp"].test_run(data=data, repeat=3)
    assert r.retval == expected
    assert r.data == data            # none of them touches the packet
    assert r.duration_ns > 0 and r.repeat == 3


def test_bench_hash_map_contents_after_run():
    data = (BENCH / "pkt_64.bin").read_bytes()
    seed = struct.unpack_from("<I", data, 0)[0]
    with bk.load(BENCH / "objects" / "hash_map.bpf.o") as coll:
        coll.programs["hash_map_xdp"].test_run(data=data)
        m = coll.maps["bench_hmap"]
        assert len(m) == 64
        for i in range(64):
            key = ((i * 2654435761) & 0xFFFFFFFF) ^ seed
            assert m[key] == (key << 32) | i


# -- maps ----------------------------------------------------------------------------------------


def test_hash_map_roundtrip_decoded_and_raw():
    with bk.load(BENCH / "objects" / "hash_map.bpf.o") as coll:
        m = coll.maps["bench_hmap"]
        assert m.kernel_btf and m.key_type_id and m.value_type_id
        m[7] = 1 << 40
        assert m[7] == 1 << 40 and 7 in m and 8 not in m
        assert m.raw[struct.pack("<I", 7)] == struct.pack("<Q", 1 << 40)
        m.raw[struct.pack("<I", 9)] = struct.pack("<Q", 5)
        assert sorted(m.keys()) == [7, 9]
        assert dict(m.items()) == {7: 1 << 40, 9: 5}
        del m[7]
        with pytest.raises(KeyNotFound):
            m[7]
        with pytest.raises(KeyNotFound):
            del m[7]
        with pytest.raises(MapError) as e:
            m.update(struct.pack("<I", 9), struct.pack("<Q", 1), 1)   # BPF_NOEXIST
        assert e.value.errno == 17
        with pytest.raises(UsageError):
            m.raw[b"\0"] = bytes(8)                                    # wrong key size
        assert m.pop(9) == 5 and len(m) == 0


def test_percpu_array_values_are_lists():
    with bk.load(ROOT / "examples/counter/counter.bpf.o") as coll:
        m = coll.maps["byte_count"]
        assert m.percpu and m.ncpus >= 1
        assert m[0] == [0] * m.ncpus
        m[0] = list(range(m.ncpus))
        assert m[0] == list(range(m.ncpus))


def test_global_data_written_and_rodata_frozen():
    spec = load_spec(ROOT / "tests/fixtures/progs/globals.bpf.o")
    spec.maps["pinned_stats"].pinning = 0
    with bk.load(spec) as coll:
        for name in (".rodata", ".data", ".bss"):
            assert coll.maps[name].raw[b"\0\0\0\0"] == spec.maps[name].initial_value
        with pytest.raises(MapError) as e:
            coll.maps[".rodata"].raw[b"\0\0\0\0"] = bytes(spec.maps[".rodata"].value_size)
        assert e.value.errno == 1  # frozen: EPERM (syscall.c: map_update_elem)
        coll.maps[".data"].raw[b"\0\0\0\0"] = bytes(spec.maps[".data"].value_size)


def test_edited_variable_reaches_the_kernel():
    spec = load_spec(ROOT / "tests/fixtures/progs/globals.bpf.o")
    spec.maps["pinned_stats"].pinning = 0
    var = next(v for v in spec.variables.values() if v.map_name == ".data")
    var.raw = b"\x5a" * var.size
    with bk.load(spec) as coll:
        value = coll.maps[".data"].raw[b"\0\0\0\0"]
        assert value[var.offset:var.offset + var.size] == b"\x5a" * var.size


def test_map_in_map_and_prog_array_slots():
    with bk.load(ROOT / "tests/fixtures/progs/map_in_map.bpf.o") as coll:
        outer, jumps = coll.maps["outer"], coll.maps["jumps"]
        ids = {n: coll.maps[n].id for n in ("inner_a", "inner_b")}
        # Lookups on fd-valued maps return ids (map_fd_sys_lookup_elem / prog_fd_array_sys_lookup_elem).
        assert struct.unpack("<I", outer.raw[struct.pack("<I", 0)])[0] == ids["inner_a"]
        assert struct.unpack("<I", outer.raw[struct.pack("<I", 2)])[0] == ids["inner_b"]
        with pytest.raises(KeyNotFound):
            outer.raw[struct.pack("<I", 1)]
        pids = {n: coll.programs[n].id for n in ("tail_a", "tail_b")}
        assert struct.unpack("<I", jumps.raw[struct.pack("<I", 0)])[0] == pids["tail_a"]
        assert struct.unpack("<I", jumps.raw[struct.pack("<I", 1)])[0] == pids["tail_b"]


# -- pins ----------------------------------------------------------------------------------------


def test_pin_by_name_reuses_a_compatible_map_and_refuses_a_different_one(bpf_pin_dir):
    path = ROOT / "tests/fixtures/progs/globals.bpf.o"
    with bk.load(path, pin_root=bpf_pin_dir) as first:
        first.maps["pinned_stats"][1] = 99
        map_id = first.maps["pinned_stats"].id
        assert first.pinned == [f"{bpf_pin_dir}/pinned_stats"]
    with bk.load(path, pin_root=bpf_pin_dir) as second:
        assert second.pinned == []                              # reused, not pinned again
        assert second.maps["pinned_stats"].id == map_id
        assert second.maps["pinned_stats"][1] == 99
    spec = load_spec(path)
    spec.maps["pinned_stats"].max_entries += 1
    with pytest.raises(PinError, match="parameter mismatch"):
        bk.load(spec, pin_root=bpf_pin_dir)
    pinned = bk.get_pinned(f"{bpf_pin_dir}/pinned_stats")
    try:
        assert pinned[1] == 99                                  # BTF fetched from the kernel
        assert pinned.id == map_id
    finally:
        pinned.close()
    bk.unpin(f"{bpf_pin_dir}/pinned_stats")
    with pytest.raises(PinError):
        bk.unpin(f"{bpf_pin_dir}/pinned_stats")


def test_handle_pin_get_pinned_program(bpf_pin_dir):
    with bk.load(BENCH / "objects" / "parse_packet.bpf.o") as coll:
        coll.programs["parse_packet_xdp"].pin(f"{bpf_pin_dir}/prog")
        with pytest.raises(PinError):
            coll.programs["parse_packet_xdp"].pin(f"{bpf_pin_dir}/prog")
    p = bk.get_pinned(f"{bpf_pin_dir}/prog")
    try:
        assert isinstance(p, bk.KernelProgram) and p.type == ProgType.XDP
        data = (BENCH / "pkt_64.bin").read_bytes()
        assert p.test_run(data).retval == 2176149347
    finally:
        p.close()
        bk.unpin(f"{bpf_pin_dir}/prog")
    with pytest.raises(PinError):
        bk.get_pinned(f"{bpf_pin_dir}/prog")


def test_pin_outside_bpffs_is_a_pin_error(tmp_path):
    with bk.load(BENCH / "objects" / "hash_map.bpf.o") as coll, \
            pytest.raises(PinError, match="not on a bpf filesystem"):
        coll.maps["bench_hmap"].pin(str(tmp_path / "m"))


# -- errors and all-or-nothing --------------------------------------------------------------------


def _spec(*programs: ProgramSpec, maps: dict[str, MapSpec] | None = None) -> CollectionSpec:
    return CollectionSpec(maps=maps or {}, programs={p.name: p for p in programs}, license="GPL")


EXIT = Instruction(0x95)
MOV_R0_1 = Instruction(0xB7, dst=0, imm=1)


def test_verifier_error_carries_the_kernels_full_log():
    bad = ProgramSpec(name="bad", section="xdp", type=ProgType.XDP, instructions=[EXIT])
    with pytest.raises(VerifierError) as e:
        bk.load(_spec(bad))
    err = e.value
    assert err.program == "bad" and err.errno == 13 and err.pc == 0
    assert err.message == "R0 !read_ok"
    assert "processed 1 insns" in err.log
    assert "R0 !read_ok" in str(err)


def test_verifier_error_from_a_timer_fixture():
    with pytest.raises(VerifierError) as e:
        bk.load(ROOT / "tests/fixtures/verifier/timer_on_stack.bpf.o")
    assert e.value.message == "R1 type=fp expected=map_value"
    assert "call bpf_timer_init#169" in e.value.log


def test_failed_load_releases_everything(bpf_pin_dir):
    m = MapSpec(name="pinme", type=MapType.ARRAY, key_size=4, value_size=4, max_entries=1, pinning=1)
    ref = [Reference(insn=0, kind="map", target="pinme")]
    ok = ProgramSpec(name="ok", section="xdp", type=ProgType.XDP, references=ref,
                     instructions=[Instruction(0x18, dst=1, imm64=0), Instruction(0, lddw_tail=True),
                                   MOV_R0_1, EXIT])
    bad = ProgramSpec(name="zbad", section="xdp", type=ProgType.XDP, instructions=[EXIT])
    before = _open_fds()
    with pytest.raises(VerifierError):
        bk.load(_spec(ok, bad, maps={"pinme": m}), pin_root=bpf_pin_dir)
    assert _open_fds() <= before
    assert not os.path.exists(f"{bpf_pin_dir}/pinme")
    with bk.load(_spec(ok, maps={"pinme": m}), pin_root=bpf_pin_dir) as coll:
        assert coll.programs["ok"].test_run(bytes(64)).retval == 1
        assert coll.programs["ok"].info["map_ids"] == [coll.maps["pinme"].id]
    bk.unpin(f"{bpf_pin_dir}/pinme")


def test_unknown_map_reference_is_a_link_error():
    from bpfsim.errors import LinkError

    p = ProgramSpec(name="p", section="xdp", type=ProgType.XDP,
                    references=[Reference(insn=0, kind="map", target="nope")],
                    instructions=[Instruction(0x18, dst=1, imm64=0), Instruction(0, lddw_tail=True),
                                  MOV_R0_1, EXIT])
    with pytest.raises(LinkError, match="unknown map 'nope'"):
        bk.load(_spec(p))


def test_closed_handles_refuse_work():
    coll = bk.load(BENCH / "objects" / "empty.bpf.o")
    prog = coll.programs["empty_xdp"]
    coll.close()
    coll.close()
    with pytest.raises(UsageError):
        prog.test_run(bytes(64))


def test_kernel_clock_and_runtime_shape():
    k = bk.Kernel()
    t0 = k.clock.now()
    k.clock.advance(1_000_000)
    assert k.clock.now() - t0 >= 1_000_000
    assert k.ncpus >= 1
    with pytest.raises(UsageError):
        k.clock.advance(-1)


def test_ringbuf_drain_returns_committed_records_in_order():
    with bk.load(ROOT / "tests/kernel/fixtures/ringbuf.bpf.o") as coll:
        assert coll.programs["put"].test_run(bytes(64), repeat=2).retval == 2
        records = coll.maps["rb"].drain()
        assert records == [struct.pack("<I", 0x11223344), b"\x05\0\0"] * 2   # discard skipped
        assert coll.maps["rb"].drain() == []
        with pytest.raises(UsageError):
            coll.maps["rb"][0]            # no keys (the emulator's handle says the same)
        with pytest.raises(MapError) as e:
            coll.maps["rb"].raw[b""]      # ringbuf.c: ringbuf_map_lookup_elem
        assert e.value.errno in (22, 524)


def test_btf_the_kernel_refuses_is_left_out_like_libbpf():
    spec = load_spec(BENCH / "objects" / "hash_map.bpf.o")
    next(t for t in spec.btf.types if t.kind == "INT").nr_bits = 77
    with bk.load(spec) as coll:
        assert "nr_bits exceeds type_size" in coll.btf_error
        assert not coll.maps["bench_hmap"].kernel_btf       # created without type ids
        data = (BENCH / "pkt_64.bin").read_bytes()
        assert coll.programs["hash_map_xdp"].test_run(data).retval == 4108211712
    # A program that needs BTF (a callback needs func_info) then fails, and says why.
    spec = load_spec(ROOT / "tests/fixtures/verifier/timer_ok.bpf.o")
    next(t for t in spec.btf.types if t.kind == "INT").nr_bits = 77
    before = _open_fds()
    with pytest.raises(VerifierError) as e:
        bk.load(spec)
    assert "BTF was refused by the kernel" in e.value.log
    assert _open_fds() <= before


def test_loading_a_spec_leaves_it_untouched():
    spec = load_spec(ROOT / "tests/fixtures/isa/calls.bpf.o")   # .ksyms: sanitised for the kernel
    before = spec.btf.to_bytes()
    with bk.load(spec):
        pass
    assert spec.btf.to_bytes() == before


def test_syscall_program_ctx_is_written_back_and_repeat_1_means_once():
    from bpfsim.errors import KernelError
    from bpfsim.uapi.constants import BPF_F_SLEEPABLE

    store = Instruction(0x62, dst=1, off=0, imm=7)           # *(u32 *)(ctx + 0) = 7
    p = ProgramSpec(name="sys", section="syscall", type=ProgType.SYSCALL, flags=BPF_F_SLEEPABLE,
                    instructions=[store, Instruction(0xB7, dst=0, imm=3), EXIT])
    with bk.load(_spec(p)) as coll:
        r = coll.programs["sys"].test_run(ctx=bytes(8))
        assert (r.retval, r.ctx, r.data) == (3, b"\x07\0\0\0" + bytes(4), None)
        assert coll.programs["sys"].test_run(ctx=bytes(8), repeat=0).retval == 3
        with pytest.raises(KernelError) as e:        # the program reads ctx: a ctx is required
            coll.programs["sys"].test_run()
        assert e.value.errno == 22


def test_map_creation_error_retries_without_btf_like_libbpf():
    spec = load_spec(ROOT / "tests/fixtures/verifier/timer_percpu_no_btf.bpf.o")
    with pytest.raises(VerifierError, match="has to have BTF in order to use bpf_timer"):
        bk.load(spec)
    spec.programs.clear()
    with bk.load(spec) as coll:
        m = coll.maps["pcpu"]          # PERCPU_ARRAY + bpf_timer: EOPNOTSUPP with BTF
        assert not m.kernel_btf and m.value_type_id   # created without, still decoded with
        assert m[0] == [m[0][0]] * m.ncpus
