"""The real processes: `python -m bpfsim.cli.main` and the installed `bpfsim` console script,
so exit codes and stderr are what a shell sees (no in-process capture)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(sys.executable).with_name("bpfsim")


def _module(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bpfsim.cli.main", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def _script(*args: object) -> subprocess.CompletedProcess[str]:
    exe = SCRIPT if SCRIPT.exists() else shutil.which("bpfsim")
    if exe is None:
        pytest.skip("the bpfsim console script is not installed (pip install -e .)")
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("launch", [_module, _script], ids=["python-m", "console-script"])
def test_run_advance_json(launch, repo) -> None:
    p = launch("run", repo / "examples/timer/timer_nocancel.bpf.o",
               "--data", repo / "examples/timer/packet.bin", "--advance", "30s", "--json")
    assert p.returncode == 0 and p.stderr == ""
    doc = json.loads(p.stdout)
    assert doc["trace"][0].endswith("timer_cb: key 0 fired 1 time(s)")


@pytest.mark.parametrize("launch", [_module, _script], ids=["python-m", "console-script"])
def test_exit_codes(launch, repo) -> None:
    ok = launch("verify", repo / "tests/fixtures/verifier/timer_ok.bpf.o")
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "prog: accepted\n", "")
    rejected = launch("verify", repo / "tests/fixtures/verifier/timer_on_stack.bpf.o")
    assert (rejected.returncode, rejected.stderr) == (1, "")
    bad = launch("run", "/nonexistent/prog.bpf.o")
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
    assert "/nonexistent/prog.bpf.o" in bad.stderr


def test_usage_error_is_one_line(repo) -> None:
    p = _script("run", repo / "examples/counter/counter.bpf.o", "--repeat", "0")
    assert p.returncode == 2
    assert p.stderr.splitlines() == [
        "bpfsim run: error: Invalid value for '--repeat': 0 is not in the range 1<=x<=1000000."]


def test_help_version_and_no_command() -> None:
    helped = _script("--help")
    assert helped.returncode == 0
    for name in ("run", "verify", "diff", "conformance", "disasm", "maps", "btf", "bench"):
        assert f"  {name} " in helped.stdout
    assert _script("--version").stdout.startswith("bpfsim, version ")
    bare = _script()
    assert bare.returncode == 2 and "Commands:" in bare.stdout
    assert bare.stderr == "bpfsim: error: missing command\n"


def test_conformance_exit_codes(repo, tmp_path) -> None:
    good = _script("conformance", repo / "tests/conformance/data/add.data")
    assert (good.returncode, good.stdout) == (0, "1 passed, 0 failed\n")
    bad = tmp_path / "bad.data"
    bad.write_text("-- asm\nmov %r0, 1\nexit\n-- result\n0x2\n")
    failed = _script("conformance", bad)
    assert failed.returncode == 1 and failed.stdout.endswith("0 passed, 1 failed\n")


def test_object_from_a_pipe(repo) -> None:
    """`bpfsim run <(cat x.bpf.o)`: a FIFO is a file to read (only devices are refused)."""
    exe = SCRIPT if SCRIPT.exists() else shutil.which("bpfsim")
    if exe is None or shutil.which("bash") is None:
        pytest.skip("needs the console script and bash")
    cmd = (f"{exe} run <(cat {repo}/examples/counter/counter.bpf.o) "
           f"--data <(cat {repo}/examples/timer/packet.bin) --json")
    p = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["program"] == "count_packets"
