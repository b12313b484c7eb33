"""`bpfsim run` end to end on the repository's real objects: the human and --json shapes,
--advance firing a bpf_timer, --repeat, --prog, and the kernel backend."""

from __future__ import annotations

import pytest

RUN_KEYS = {"program", "retval", "data_out", "duration_ns", "maps", "trace", "timeline"}
TIMER_LINE = "bpf_trace_printk: timer_cb: key 0 fired 1 time(s)"


@pytest.fixture
def packet(repo):
    return repo / "examples/timer/packet.bin"


@pytest.fixture
def nocancel(repo):
    return repo / "examples/timer/timer_nocancel.bpf.o"


def test_json_shape(bpfsim_cli, repo, packet) -> None:
    res = bpfsim_cli("run", repo / "examples/counter/counter.bpf.o", "--data", packet, "--json")
    assert res.rc == 0 and res.err == ""
    doc = res.json
    assert set(doc) >= RUN_KEYS
    assert doc["program"] == "count_packets"
    assert isinstance(doc["retval"], int) and isinstance(doc["duration_ns"], int)
    assert bytes.fromhex(doc["data_out"])            # hex, the packet as the program left it
    assert set(doc["maps"]) == {"proto_count", "byte_count"}
    # bpftool map dump -j shape: raw hex bytes plus the BTF-decoded "formatted" form
    (entry,) = doc["maps"]["proto_count"]
    assert entry["key"] == ["0x06", "0x00", "0x00", "0x00"]
    assert entry["formatted"] == {"key": 6, "value": 1}
    assert doc["trace"] == [] and doc["timeline"] == []


def test_human_output(bpfsim_cli, repo, packet) -> None:
    res = bpfsim_cli("run", repo / "examples/counter/counter.bpf.o", "--data", packet)
    assert res.rc == 0 and res.err == ""
    lines = res.out.splitlines()
    assert lines[0].split() == ["program", "count_packets", "(sim)"]
    assert lines[1].split()[0] == "retval"
    assert "  proto_count: 1 entry" in lines
    assert '    {"key": 6, "value": 1}' in lines
    assert lines[-1] == "trace     (empty)"


def test_repeat_runs_the_program_n_times(bpfsim_cli, repo, packet) -> None:
    doc = bpfsim_cli("run", repo / "examples/counter/counter.bpf.o", "--data", packet,
                     "--repeat", "3", "--json").json
    assert doc["maps"]["proto_count"][0]["formatted"] == {"key": 6, "value": 3}
    per_cpu = doc["maps"]["byte_count"][0]["formatted"]["values"]
    assert sum(v["value"] for v in per_cpu) == 3 * len(packet.read_bytes())


def test_advance_fires_the_timer(bpfsim_cli, nocancel, packet) -> None:
    before = bpfsim_cli("run", nocancel, "--data", packet, "--json").json
    assert before["trace"] == []
    assert [e["event"] for e in before["timeline"]] == ["init", "set_callback", "start"]
    assert before["maps"]["hmap"][0]["formatted"]["value"] == {"counter": 0, "timer": {}}

    after = bpfsim_cli("run", nocancel, "--data", packet, "--advance", "30s", "--json").json
    assert [e["event"] for e in after["timeline"]] == ["init", "set_callback", "start", "fire"]
    fire = after["timeline"][-1]
    assert fire["callback"] == "timer_cb" and fire["map"] == "hmap"
    assert len(after["trace"]) == 1 and after["trace"][0].endswith(TIMER_LINE)
    assert " ..s21 " in after["trace"][0]          # softirq context, as the kernel prints it
    assert after["maps"]["hmap"][0]["formatted"]["value"] == {"counter": 1, "timer": {}}


def test_advance_zero_fires_a_zero_ns_timer(bpfsim_cli, nocancel, packet) -> None:
    # examples/timer/README.md: the callback runs once the clock moves, even by 0
    doc = bpfsim_cli("run", nocancel, "--data", packet, "--advance", "0s", "--json").json
    assert len(doc["trace"]) == 1


def test_advance_human_output(bpfsim_cli, nocancel, packet) -> None:
    res = bpfsim_cli("run", nocancel, "--data", packet, "--advance", "5ms")
    assert res.rc == 0
    assert "timeline" in res.out.splitlines()
    assert any(" fire " in line and "hmap[00000000]" in line for line in res.out.splitlines())
    assert res.out.rstrip().endswith(TIMER_LINE)


def test_no_timeline(bpfsim_cli, nocancel, packet) -> None:
    doc = bpfsim_cli("run", nocancel, "--data", packet, "--no-timeline", "--json").json
    assert "timeline" not in doc


def test_prog_choice(bpfsim_cli, repo, packet) -> None:
    obj = repo / "tests/fixtures/runtime/xdp_adjust.bpf.o"
    res = bpfsim_cli("run", obj, "--data", packet)
    line = res.expect_bad_input("5 programs", "--prog", "xdp_grow")
    assert line.startswith("bpfsim: error: ")
    doc = bpfsim_cli("run", obj, "--data", packet, "--prog", "xdp_shrink", "--json").json
    assert doc["program"] == "xdp_shrink"


def test_prog_with_autoload_off_can_be_chosen(bpfsim_cli, repo, packet) -> None:
    # SEC("?xdp"): not loaded by default, loaded when asked for by name
    doc = bpfsim_cli("run", repo / "tests/fixtures/progs/sections.bpf.o", "--prog", "lazy",
                     "--data", packet, "--json").json
    assert doc["program"] == "lazy" and doc["retval"] == 2


def test_ctx_file(bpfsim_cli, repo, tmp_path) -> None:
    ctx = tmp_path / "ctx.bin"
    ctx.write_bytes(bytes(8))
    res = bpfsim_cli("run", repo / "tests/fixtures/verifier/timer_ok.bpf.o", "--ctx", ctx, "--json")
    assert res.rc == 0, res.err
    assert res.json["program"] == "prog"


def test_real_clock(bpfsim_cli, nocancel, packet) -> None:
    doc = bpfsim_cli("run", nocancel, "--data", packet, "--clock", "real", "--advance", "20ms",
                     "--json").json
    assert any(line.endswith(TIMER_LINE) for line in doc["trace"])


def test_verifier_rejection_is_one_line(bpfsim_cli, repo, packet) -> None:
    res = bpfsim_cli("run", repo / "tests/fixtures/verifier/timer_on_stack.bpf.o", "--ctx", packet)
    res.expect_bad_input("verifier rejected program prog", "R1 type=fp expected=map_value")


def test_test_run_refusal_is_bad_input(bpfsim_cli, repo) -> None:
    # an skb program without data: BPF_PROG_TEST_RUN's -EINVAL, as the kernel answers
    res = bpfsim_cli("run", repo / "examples/counter/counter.bpf.o")
    res.expect_bad_input("BPF_PROG_TEST_RUN", "errno 22")


@pytest.mark.kernel
def test_kernel_backend(bpfsim_cli, repo, packet) -> None:
    sim = bpfsim_cli("run", repo / "examples/counter/counter.bpf.o", "--data", packet, "--json").json
    res = bpfsim_cli("run", repo / "examples/counter/counter.bpf.o", "--data", packet,
                     "--backend", "kernel", "--json")
    assert res.rc == 0, res.err
    kern = res.json
    assert set(kern) >= RUN_KEYS and kern["backend"] == "kernel"
    assert kern["retval"] == sim["retval"]
    assert kern["data_out"] == sim["data_out"]
    assert kern["maps"]["proto_count"] == sim["maps"]["proto_count"]


@pytest.mark.kernel
def test_kernel_backend_advance_shows_the_timer_line(bpfsim_cli, nocancel, packet) -> None:
    res = bpfsim_cli("run", nocancel, "--data", packet, "--backend", "kernel", "--advance", "20ms",
                     "--json")
    assert res.rc == 0, res.err
    doc = res.json
    assert any(line.endswith(TIMER_LINE) for line in doc["trace"]), doc["trace"]
    assert doc["maps"]["hmap"][0]["formatted"]["value"] == {"counter": 1, "timer": {}}
