"""`bpfsim verify` on tests/fixtures/verifier: verdicts, exit codes (0 accepted, 1 rejected),
the --json shape, and objects whose programs cannot be loaded one by one naively."""

from __future__ import annotations

import pytest

FIXTURES = "tests/fixtures/verifier"
# fixture -> the kernel's error line (tests/verifier/test_timer_rules.py holds the full table)
REJECTED = {
    "timer_on_stack": "R1 type=fp expected=map_value",
    "timer_not_gpl": "cannot call GPL-restricted function from non-GPL compatible program",
    "timer_wrong_offset": "off 24 doesn't point to 'struct bpf_timer' that is at 8",
    "timer_in_kprobe": "tracing progs cannot use bpf_timer yet",
}


def test_accepted(bpfsim_cli, repo) -> None:
    res = bpfsim_cli("verify", repo / FIXTURES / "timer_ok.bpf.o")
    assert (res.rc, res.out, res.err) == (0, "prog: accepted\n", "")


@pytest.mark.parametrize("name", sorted(REJECTED))
def test_rejected_exits_1_with_the_kernel_line(bpfsim_cli, repo, name) -> None:
    res = bpfsim_cli("verify", repo / FIXTURES / f"{name}.bpf.o")
    assert res.rc == 1 and res.err == ""
    assert res.out == f"prog: rejected: {REJECTED[name]}\n"


def test_json_shape(bpfsim_cli, repo) -> None:
    res = bpfsim_cli("verify", repo / FIXTURES / "timer_wrong_offset.bpf.o", "--json")
    assert res.rc == 1
    (entry,) = res.json["programs"]
    assert {"name", "type", "verdict", "error", "insn", "log"} <= set(entry)
    assert entry["name"] == "prog" and entry["type"] == "syscall"
    assert entry["verdict"] == "rejected"
    assert entry["error"] == REJECTED["timer_wrong_offset"]
    assert isinstance(entry["insn"], int)
    assert entry["error"] in entry["log"]

    ok = bpfsim_cli("verify", repo / FIXTURES / "timer_ok.bpf.o", "--json")
    assert ok.rc == 0
    assert ok.json["programs"][0] | {"log": ""} == {
        "name": "prog", "type": "syscall", "section": "syscall", "verdict": "accepted",
        "error": None, "errno": None, "insn": None, "log": ""}


def test_log_level_prints_the_log(bpfsim_cli, repo) -> None:
    res = bpfsim_cli("verify", repo / FIXTURES / "timer_on_stack.bpf.o", "--log-level", "1")
    assert res.rc == 1
    lines = res.out.splitlines()
    assert lines[0] == f"prog: rejected: {REJECTED['timer_on_stack']}"
    assert len(lines) > 1 and all(line.startswith("  ") for line in lines[1:])


@pytest.mark.parametrize("obj, names", [
    # a SEC("?xdp") program (autoload off) is still verified
    ("tests/fixtures/progs/sections.bpf.o", ["lazy", "frags", "sys", "kp", "tpb", "cg", "tcx"]),
    # PROG_ARRAY .values name the other programs: each program is verified alone
    ("tests/fixtures/progs/map_in_map.bpf.o", ["tail_a", "tail_b", "entry"]),
    ("tests/fixtures/runtime/helpers.bpf.o", ["tail", "helpers"]),
    # a LIBBPF_PIN_BY_NAME map
    ("tests/fixtures/progs/globals.bpf.o", ["sock_one", "sock_two", "xdp_count"]),
])
def test_every_program_of_an_object(bpfsim_cli, repo, obj, names) -> None:
    res = bpfsim_cli("verify", repo / obj)
    assert res.rc == 0, res.err
    assert res.out.splitlines() == [f"{n}: accepted" for n in names]


def test_prog_option(bpfsim_cli, repo) -> None:
    res = bpfsim_cli("verify", repo / "tests/fixtures/progs/map_in_map.bpf.o", "--prog", "entry")
    assert (res.rc, res.out) == (0, "entry: accepted\n")
    bad = bpfsim_cli("verify", repo / "tests/fixtures/progs/map_in_map.bpf.o", "--prog", "nosuch")
    bad.expect_bad_input("--prog", "nosuch", "tail_a")


@pytest.mark.kernel
@pytest.mark.parametrize("name", ["timer_ok", *sorted(REJECTED)])
def test_kernel_backend_same_verdict(bpfsim_cli, repo, name) -> None:
    obj = repo / FIXTURES / f"{name}.bpf.o"
    sim = bpfsim_cli("verify", obj, "--json")
    kern = bpfsim_cli("verify", obj, "--json", "--backend", "kernel")
    assert kern.rc == sim.rc
    keep = ("name", "type", "verdict", "error", "errno")
    assert [{k: p[k] for k in keep} for p in kern.json["programs"]] == \
        [{k: p[k] for k in keep} for p in sim.json["programs"]]


@pytest.mark.kernel
def test_kernel_backend_verify_does_not_pin(bpfsim_cli, repo) -> None:
    import os

    before = set(os.listdir("/sys/fs/bpf"))
    res = bpfsim_cli("verify", repo / "tests/fixtures/progs/globals.bpf.o", "--backend", "kernel")
    assert res.rc == 0, res.err
    assert "pinned_stats" not in set(os.listdir("/sys/fs/bpf")) - before
