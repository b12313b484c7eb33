"""The other subcommands end to end: `diff`, `maps dump`, `disasm`, `btf dump`, `conformance`
and `bench`, each on the repository's real objects."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

# -- diff (sim versus kernel) ---------------------------------------------------------------------


@pytest.mark.kernel
@pytest.mark.parametrize("obj", ["examples/counter/counter.bpf.o",
                                 "examples/packet_parser/packet_parser.bpf.o",
                                 "examples/timer/timer_nocancel.bpf.o"])
def test_diff_equal(bpfsim_cli, repo, obj) -> None:
    res = bpfsim_cli("diff", repo / obj, "--data", repo / "examples/timer/packet.bin",
                     "--advance", "10ms")
    assert (res.rc, res.out, res.err) == (0, "equal\n", "")


@pytest.mark.kernel
def test_diff_json_and_exit_1_on_a_difference(bpfsim_cli, repo) -> None:
    # flow_expiry stores bpf_ktime_get_ns(): the virtual and the real clock differ
    args = ["diff", repo / "examples/flow_expiry/flow_expiry.bpf.o",
            "--data", repo / "examples/timer/packet.bin", "--json"]
    res = bpfsim_cli(*args)
    assert res.rc == 1, res.err
    doc = res.json
    assert doc["equal"] is False and doc["differences"]
    assert all({"step", "what", "sim", "kernel"} <= set(d) for d in doc["differences"])
    assert {d["what"] for d in doc["differences"]} == {"maps.flows"}
    same = bpfsim_cli(*args, "--ignore", "flows.first_seen", "--ignore", "flows.last_seen")
    assert same.rc == 0, same.err
    assert same.json["equal"] is True and same.json["differences"] == []
    assert [s["sim"]["retval"] for s in same.json["steps"] if "retval" in s["sim"]] == [0]


def test_diff_bad_usage(bpfsim_cli, repo) -> None:
    res = bpfsim_cli("diff", repo / "tests/fixtures/runtime/xdp_adjust.bpf.o")
    res.expect_bad_input("--prog", "5 programs")


# -- maps dump ------------------------------------------------------------------------------------


def test_maps_dump_object(bpfsim_cli, repo) -> None:
    res = bpfsim_cli("maps", "dump", repo / "examples/counter/counter.bpf.o")
    assert res.rc == 0 and res.err == ""
    assert res.out.splitlines() == [
        "proto_count: 0 entries",
        "byte_count: 1 entry",
        '  {"key": 0, "values": [{"cpu": 0, "value": 0}, {"cpu": 1, "value": 0}]}',
    ]


def test_maps_dump_json(bpfsim_cli, repo) -> None:
    doc = bpfsim_cli("maps", "dump", "--json", repo / "examples/timer/timer.bpf.o").json
    assert set(doc) == {"hmap", ".rodata"}
    (entry,) = doc["hmap"]
    assert entry["key"] == ["0x00"] * 4 and len(entry["value"]) == 24
    assert entry["formatted"] == {"key": 0, "value": {"counter": 0, "timer": {}}}
    one = bpfsim_cli("maps", "dump", "--json", "--map", "hmap", repo / "examples/timer/timer.bpf.o")
    assert one.json == doc["hmap"]          # one map: bpftool's list, not a dict


def test_maps_dump_of_an_object_whose_program_is_rejected(bpfsim_cli, repo) -> None:
    res = bpfsim_cli("maps", "dump", repo / "tests/fixtures/verifier/timer_wrong_offset.bpf.o")
    assert res.rc == 0, res.err
    assert res.out.startswith("tmap: 4 entries\n")


@pytest.mark.kernel
def test_maps_dump_pinned_kernel_map(bpfsim_cli, repo, bpf_pin_dir) -> None:
    import bpfsim.kernel

    path = f"{bpf_pin_dir}/hmap"
    with bpfsim.kernel.load(repo / "examples/timer/timer.bpf.o") as coll:
        coll.maps["hmap"][0] = {"counter": 7}
        coll.maps["hmap"].pin(path)
    res = bpfsim_cli("maps", "dump", path, "--json")
    assert res.rc == 0, res.err
    doc = res.json
    assert [e["formatted"] for e in doc] == [{"key": 0, "value": {"counter": 7, "timer": {}}}]
    text = bpfsim_cli("maps", "dump", path)
    assert text.out.splitlines() == ["hmap: 1 entry", '  {"key": 0, "value": {"counter": 7, "timer": {}}}']
    if shutil.which("bpftool"):
        theirs = json.loads(subprocess.run(["bpftool", "-j", "map", "dump", "pinned", path],
                                           capture_output=True, text=True, check=True).stdout)
        assert doc == theirs


@pytest.mark.kernel
def test_maps_dump_pinned_program_is_bad_input(bpfsim_cli, repo, bpf_pin_dir) -> None:
    import bpfsim.kernel

    path = f"{bpf_pin_dir}/prog"
    with bpfsim.kernel.load(repo / "bench/objects/empty.bpf.o") as coll:
        coll.programs["empty_xdp"].pin(path)
    bpfsim_cli("maps", "dump", path).expect_bad_input("pinned program, not a map")


# -- disasm and btf dump: byte-equal to the golden llvm-objdump / bpftool output ------------------


@pytest.mark.parametrize("args, golden", [
    (["disasm", "calls.bpf.o"], "golden/calls.bpf.o.d.txt"),
    (["disasm", "-r", "calls.bpf.o"], "golden/calls.bpf.o.dr.txt"),
    (["disasm", "--mcpu", "v4", "alu_v4.bpf.o"], "golden/alu_v4.bpf.o.v4.txt"),
])
def test_disasm_matches_llvm_objdump(bpfsim_cli, repo, monkeypatch, args, golden) -> None:
    monkeypatch.chdir(repo / "tests/fixtures/isa")     # the golden header names the file as given
    res = bpfsim_cli(*args)
    assert res.rc == 0 and res.err == ""
    assert res.out == (repo / "tests/fixtures/isa" / golden).read_text()


def test_disasm_json(bpfsim_cli, repo) -> None:
    doc = bpfsim_cli("disasm", "--json", repo / "examples/counter/counter.bpf.o").json
    (sec,) = doc["sections"]
    assert sec["name"] == "tc" and sec["insns"][0]["symbol"] == "count_packets"
    assert sec["insns"][0]["text"] == "r6 = r1" and sec["insns"][0]["bytes"] == "bf16000000000000"


@pytest.mark.parametrize("args, golden", [
    (["btf", "dump", "types.bpf.o"], "types.bpf.btf.txt"),
    (["btf", "dump", "--json", "types.bpf.o"], "types.bpf.btf.json"),
    (["btf", "dump", "--format", "c", "types.bpf.o"], "types.bpf.btf.h"),
])
def test_btf_dump_matches_bpftool(bpfsim_cli, repo, monkeypatch, args, golden) -> None:
    monkeypatch.chdir(repo / "tests/fixtures/btf")
    res = bpfsim_cli(*args)
    assert res.rc == 0 and res.err == ""
    assert res.out == (repo / "tests/fixtures/btf" / golden).read_text()


def test_btf_dump_json_with_c_format_is_bad_usage(bpfsim_cli, repo) -> None:
    res = bpfsim_cli("btf", "dump", "--json", "--format", "c", repo / "tests/fixtures/btf/types.bpf.o")
    res.expect_bad_input("JSON output for C-syntax dump is not supported")


# -- conformance ----------------------------------------------------------------------------------


def test_conformance_suite_passes(bpfsim_cli, repo) -> None:
    res = bpfsim_cli("conformance", repo / "tests/conformance/data", "--json")
    assert res.rc == 0, res.out[-500:]
    doc = res.json
    assert doc["failed"] == 0 and doc["passed"] == len(doc["results"]) > 300


def test_conformance_failure_exits_1(bpfsim_cli, repo, tmp_path) -> None:
    bad = tmp_path / "wrong.data"
    bad.write_text("-- asm\nmov %r0, 3\nexit\n-- result\n0x4\n")
    res = bpfsim_cli("conformance", bad, repo / "tests/conformance/data/add.data", "--json")
    assert res.rc == 1
    doc = res.json
    assert (doc["passed"], doc["failed"]) == (1, 1)
    first = doc["results"][0]
    assert {"file", "ok", "expected", "got", "error"} <= set(first)
    assert (first["ok"], first["expected"], first["got"]) == (False, "0x4", "0x3")


# -- bench ----------------------------------------------------------------------------------------


def test_bench_sim_only(bpfsim_cli) -> None:
    res = bpfsim_cli("bench", "--only", "empty", "--backend", "sim", "--runs", "2", "--json")
    assert res.rc == 0, res.err
    rows = res.json["results"]
    assert [(r["program"], r["packet"]) for r in rows] == [("empty", "pkt_64"), ("empty", "pkt_1500")]
    assert all(r["sim_retval"] == r["expected"] == 0 and r["ok"] for r in rows)
    assert all(r["insns"] == 2 for r in rows)        # bench/README.md: `empty` executes 2 insns
    text = bpfsim_cli("bench", "--only", "empty", "--backend", "sim", "--runs", "1")
    assert text.rc == 0
    assert [line.split()[-1] for line in text.out.splitlines()[1:]] == ["ok", "ok"]


@pytest.mark.kernel
def test_bench_both_backends(bpfsim_cli) -> None:
    res = bpfsim_cli("bench", "--only", "empty", "--only", "parse_packet", "--runs", "1", "--json")
    assert res.rc == 0, res.err
    for r in res.json["results"]:
        assert r["sim_retval"] == r["kernel_retval"] == r["expected"], r
        assert r["kernel_ns"] is not None and r["ratio"] > 0


def test_bench_unknown_name(bpfsim_cli) -> None:
    bpfsim_cli("bench", "--only", "nosuch", "--backend", "sim").expect_bad_input(
        "--only", "no benchmark named nosuch", "loop_arith")


def test_bench_wrong_result_exits_1(bpfsim_cli, repo, tmp_path) -> None:
    # `parse_packet` returns 0 for a packet that is not IPv4 TCP/UDP: not the documented value
    for name in ("parse_packet.bpf.o",):
        shutil.copy(repo / "bench/objects" / name, tmp_path / name)
    for pkt in ("pkt_64.bin", "pkt_1500.bin"):
        (tmp_path / pkt).write_bytes(bytes(64))
    res = bpfsim_cli("bench", "--dir", tmp_path, "--backend", "sim", "--runs", "1")
    assert res.rc == 1
    assert res.out.splitlines()[1].endswith("WRONG RESULT")


def test_bench_without_a_kernel(bpfsim_cli, monkeypatch) -> None:
    import bpfsim.kernel
    from bpfsim.errors import KernelError

    def refuse(*_a, **_k):
        raise KernelError("BPF_PROG_LOAD", 1, "not root")

    monkeypatch.setattr(bpfsim.kernel, "load", refuse)
    both = bpfsim_cli("bench", "--only", "empty", "--runs", "1", "--json")
    assert both.rc == 0
    assert both.err.splitlines() == [
        "bpfsim bench: kernel backend unavailable (BPF_PROG_LOAD: Operation not permitted (errno 1): "
        "not root); timing the emulator only"]
    assert all(r["sim_retval"] == 0 and "kernel_ns" not in r for r in both.json["results"])
    bpfsim_cli("bench", "--only", "empty", "--backend", "kernel").expect_bad_input("BPF_PROG_LOAD")


def test_bench_timers_reports_lateness_per_backend(bpfsim_cli) -> None:
    """`bench --timers N`: N one-shot 10 ms timers on the emulator's real clock; both stamps are
    taken inside BPF, so the figure is the timer's own lateness (never negative)."""
    res = bpfsim_cli("bench", "--timers", "3", "--backend", "sim", "--json")
    assert res.rc == 0, res.err
    late = res.json["lateness_ns"]["sim"]
    assert len(late) == 3 and all(x >= 0 for x in late)
