"""Runtime.load and the object lifetimes: all-or-nothing loads, LIBBPF_PIN_BY_NAME reuse,
pins and handles, Program handles, SYSCALL contexts, refusals with the kernel's errno."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

import bpfsim
from bpfsim.errors import KernelError, LinkError, ParseError, PinError, UsageError
from bpfsim.runtime.kobject import live_objects
from bpfsim.uapi.constants import ProgType

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "runtime"
PINNED = str(FIX / "pinned.bpf.o")
EMPTY = str(ROOT / "bench" / "objects" / "empty.bpf.o")
PKT = (ROOT / "bench" / "pkt_64.bin").read_bytes()


@pytest.fixture
def rt():
    r = bpfsim.Runtime()
    yield r
    r.close()


def test_pin_by_name_is_shared_between_loads(backend) -> None:
    a = backend.load(PINNED)
    b = backend.load(PINNED)
    assert a.programs["count"].test_run(data=PKT).retval == 1
    assert b.programs["count"].test_run(data=PKT).retval == 2     # the same pinned map
    pinned = backend.get_pinned(backend.path("counter"))
    assert pinned.raw[b"\0\0\0\0"] == struct.pack("<Q", 2)


def test_pin_by_name_incompatible_is_refused(backend) -> None:
    backend.load(PINNED)
    spec = bpfsim.load_spec(PINNED)
    spec.maps["counter"].max_entries = 2
    with pytest.raises(PinError, match="mismatch"):
        backend.load(spec)


def test_syscall_ctx_in_and_out(rt) -> None:
    # (sim only: bpfsim.kernel passes ctx_out, which bpf_prog_test_run_syscall refuses)
    coll = rt.load(PINNED, pin_root="/sys/fs/bpf")
    r = coll.programs["syscall_ctx"].test_run(ctx=struct.pack("<II", 20, 0), repeat=0)
    assert r.retval == 21
    assert struct.unpack("<II", r.ctx) == (20, 40)
    assert r.data is None


def test_syscall_refuses_data(backend) -> None:
    coll = backend.load(PINNED)
    with pytest.raises(KernelError) as e:
        coll.programs["syscall_ctx"].test_run(data=PKT, ctx=bytes(8), repeat=0)
    assert e.value.errno == 22


def test_failed_load_leaves_nothing(rt) -> None:
    spec = bpfsim.load_spec(PINNED)
    spec.programs["count"].references[0].target = "nope"      # resolves to no map
    rt.mkdir("/sys/fs/bpf/t")
    with pytest.raises(LinkError):
        rt.load(spec, pin_root="/sys/fs/bpf/t")
    assert live_objects(rt, "map") == [] and live_objects(rt, "prog") == []
    assert not rt.pins.exists("/sys/fs/bpf/t/counter")


def test_collection_close_and_pins_keep_objects(rt) -> None:
    coll = rt.load(PINNED, pin_root="/sys/fs/bpf")
    prog = coll.programs["count"]
    prog.pin("/sys/fs/bpf/count")
    coll.close()
    assert coll.closed and prog.closed
    assert [m.name for m in live_objects(rt, "map")] == ["counter"]   # held by its pin
    again = rt.get_pinned("/sys/fs/bpf/count")
    assert again.test_run(data=PKT).retval == 1
    again.close()
    rt.unpin("/sys/fs/bpf/count")
    assert live_objects(rt, "prog") == []
    rt.unpin("/sys/fs/bpf/counter")
    assert live_objects(rt, "map") == []
    with pytest.raises(PinError):
        rt.get_pinned("/sys/fs/bpf/counter")


def test_program_handle(rt) -> None:
    with rt.load(PINNED) as coll:
        p = coll.programs["count"]
        assert (p.name, p.type) == ("count", ProgType.XDP)
        info = p.info
        assert info["type"] == "xdp" and info["insns"] == p.insn_count == len(p.insns)
        assert info["map_ids"] == [coll.maps["counter"].id] and info["gpl_compatible"]
        assert len(info["tag"]) == 16
    with pytest.raises(UsageError):
        p.test_run(data=PKT)


def test_bpfsim_load_and_bad_input(tmp_path) -> None:
    coll = bpfsim.load(EMPTY)
    assert coll.programs["empty_xdp"].test_run(data=PKT).retval == 0
    coll.runtime.close()
    bad = tmp_path / "bad.o"
    bad.write_bytes(b"\x7fELF not really")
    with pytest.raises(ParseError):
        bpfsim.load(str(bad))


def test_test_run_of_a_type_without_test_run(rt) -> None:
    spec = bpfsim.load_spec(EMPTY)
    spec.programs["empty_xdp"].type = ProgType.KPROBE
    coll = rt.load(spec)
    with pytest.raises(KernelError) as e:
        coll.programs["empty_xdp"].test_run()
    assert e.value.errno == 524                       # ENOTSUPP, as bpf(2) leaks it


def test_closed_runtime_refuses_loads() -> None:
    r = bpfsim.Runtime()
    r.close()
    r.close()
    with pytest.raises(UsageError):
        r.load(EMPTY)
    with pytest.raises(UsageError):
        bpfsim.Runtime(ncpus=0)
    with pytest.raises(UsageError):
        bpfsim.Runtime(clock="sundial")


def test_runs_hold_the_cpu_lock(rt) -> None:
    coll = rt.load(EMPTY)
    seen = []
    real = rt.cpu_locks[0]

    class Spy:
        def __enter__(self):
            seen.append("enter")
            return real.__enter__()

        def __exit__(self, *a):
            seen.append("exit")
            return real.__exit__(*a)

    rt.cpu_locks[0] = Spy()
    coll.programs["empty_xdp"].test_run(data=PKT)
    assert seen == ["enter", "exit"]


def test_raw_tracepoint_ctx_and_cpu(rt) -> None:
    # (sim only: bpfsim.kernel passes ctx_out, which bpf_prog_test_run_raw_tp refuses)
    coll = rt.load(str(FIX / "raw_tp.bpf.o"))
    p = coll.programs["rtp"]
    assert p.test_run(ctx=struct.pack("<QQ", 4, 2), repeat=0).retval == 42
    assert p.test_run(ctx=struct.pack("<QQ", 4, 2), repeat=0, cpu=1, flags=1).retval == 1042
    with pytest.raises(KernelError) as e:
        p.test_run(ctx=struct.pack("<QQ", 4, 2), repeat=0, cpu=1)     # cpu without the flag
    assert e.value.errno == 22
    with pytest.raises(KernelError) as e:
        p.test_run(ctx=struct.pack("<QQ", 4, 2), repeat=0, cpu=64, flags=1)
    assert e.value.errno == 6                                          # ENXIO


def test_real_clock_measures_duration() -> None:
    rt = bpfsim.Runtime(clock="real")
    coll = rt.load(EMPTY)
    r = coll.programs["empty_xdp"].test_run(data=PKT, repeat=5)
    assert r.duration_ns > 0 and r.repeat == 5
    rt.close()


def test_ctx_as_a_dict() -> None:
    rt = bpfsim.Runtime()
    coll = rt.load(str(FIX / "skb.bpf.o"))
    r = coll.programs["tc_fields"].test_run(data=PKT, ctx={"mark": 1, "cb": [0, 0, 0, 0, 9]})
    assert len(r.ctx) == 192
    with pytest.raises(UsageError, match="no field 'bogus'"):
        coll.programs["tc_fields"].test_run(data=PKT, ctx={"bogus": 1})
    rt.close()


@pytest.mark.parametrize("kw", [{"data": "text"}, {"ctx": 5}, {"repeat": -1}, {"repeat": "3"},
                                {"cpu": 1.5}, {"flags": 1 << 40}])
def test_bad_test_run_arguments_are_usage_errors(rt, kw) -> None:
    coll = rt.load(EMPTY)
    with pytest.raises(UsageError):
        coll.programs["empty_xdp"].test_run(**({"data": PKT} | kw))


def test_bad_load_source(rt) -> None:
    with pytest.raises(UsageError):
        rt.load(42)


def test_deleted_value_readable_until_the_run_ends(backend) -> None:
    coll = backend.load(str(FIX / "rcu.bpf.o"))
    assert coll.programs["use_after_delete"].test_run(data=PKT).retval == 42


def test_deferred_frees_wait_for_running_programs(rt) -> None:
    done = []
    rt.rcu_read_lock()
    rt.defer_free(lambda: done.append(1))
    assert done == []
    rt.rcu_read_unlock()
    assert done == [1]
    rt.defer_free(lambda: done.append(2))
    assert done == [1, 2]


def test_verifier_rejection_leaves_nothing(rt) -> None:
    from bpfsim.errors import VerifierError

    with pytest.raises(VerifierError):
        rt.load(str(ROOT / "tests" / "fixtures" / "verifier" / "timer_on_stack.bpf.o"))
    assert live_objects(rt, "map") == [] and live_objects(rt, "prog") == []
    # verify=False loads it anyway (the structural and safety checks are skipped)
    coll = rt.load(str(ROOT / "tests" / "fixtures" / "verifier" / "timer_on_stack.bpf.o"), verify=False)
    assert coll.programs


def test_unimplemented_helper_stops_the_run(rt) -> None:
    from bpfsim.errors import NotSupported

    spec = bpfsim.load_spec(EMPTY)
    prog = spec.programs["empty_xdp"]
    from bpfsim.isa.insn import Instruction

    prog.instructions = [Instruction(0x85, imm=13), Instruction(0x95)]   # call bpf_clone_redirect
    coll = rt.load(spec, verify=False)
    with pytest.raises(NotSupported, match="bpf_clone_redirect"):
        coll.programs["empty_xdp"].test_run(data=PKT)


def test_verifier_log_of_accepted_programs(rt) -> None:
    coll = rt.load(PINNED)
    assert "processed" in coll.programs["count"].verifier_log
    assert rt.load(EMPTY, verify=False).programs["empty_xdp"].verifier_log == ""


def test_tag_is_the_kernel_s(rt) -> None:
    # `bpftool prog show` on 6.18 for the same objects
    coll = rt.load(str(ROOT / "bench" / "objects" / "hash_map.bpf.o"))
    assert coll.programs["hash_map_xdp"].info["tag"] == "a371bf77af5a780e"
    coll = rt.load(str(FIX / "helpers.bpf.o"))
    assert coll.programs["tail"].info["tag"] == "e8ec9c0bde786dda"
