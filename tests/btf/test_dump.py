"""`bpfsim btf dump` prints what bpftool prints, byte for byte (golden files from the
fixture Makefile; the machine's vmlinux BTF when bpftool is at hand)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from bpfsim.btf.dump import dump_json, dump_raw
from bpfsim.cli.cmd_btf import read_btf
from bpfsim.cli.main import main

from .conftest import FIXTURES

OBJECTS = ["types.bpf.o", "core.bpf.o"]


@pytest.mark.parametrize("obj", OBJECTS)
def test_raw_and_json_match_golden(obj):
    btf = read_btf(str(FIXTURES / obj))
    stem = obj[:-2]
    assert dump_raw(btf) == (FIXTURES / f"{stem}.btf.txt").read_text()
    assert dump_json(btf) == (FIXTURES / f"{stem}.btf.json").read_text()


@pytest.mark.parametrize("flag, suffix", [([], "btf.txt"), (["--json"], "btf.json")])
def test_cli(capsys, flag, suffix):
    assert main(["btf", "dump", *flag, str(FIXTURES / "types.bpf.o")]) == 0
    assert capsys.readouterr().out == (FIXTURES / f"types.bpf.{suffix}").read_text()


def test_cli_raw_btf_file(tmp_path, capsys):
    blob = tmp_path / "x.btf"
    blob.write_bytes(read_btf(str(FIXTURES / "core.bpf.o")).to_bytes())
    assert main(["btf", "dump", str(blob)]) == 0
    assert capsys.readouterr().out == (FIXTURES / "core.bpf.btf.txt").read_text()


def test_cli_bad_input(tmp_path, capsys):
    bad = tmp_path / "bad.o"
    bad.write_bytes(b"\x9f\xeb\x01\x00garbage")
    assert main(["btf", "dump", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bpfsim: error:") and "Traceback" not in err


VMLINUX = Path("/sys/kernel/btf/vmlinux")


@pytest.mark.kernel
@pytest.mark.skipif(not VMLINUX.exists() or not shutil.which("bpftool"),
                    reason="needs /sys/kernel/btf/vmlinux and bpftool")
@pytest.mark.parametrize("json_flag", [False, True])
def test_vmlinux_matches_bpftool(json_flag):
    """Every kind the kernel's own BTF uses, ~150k types, against bpftool itself."""
    args = ["bpftool"] + (["-j"] if json_flag else []) + ["btf", "dump", "file", str(VMLINUX)]
    expected = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    btf = read_btf(str(VMLINUX))
    assert (dump_json(btf) if json_flag else dump_raw(btf)) == expected


REPO = Path(__file__).resolve().parents[2]
ALL_OBJECTS = sorted(p for pattern in ("tests/fixtures/**/*.o", "examples/**/*.o", "bench/**/*.o")
                     for p in REPO.glob(pattern) if p.read_bytes()[:4] == b"\x7fELF")


@pytest.mark.skipif(not shutil.which("bpftool"), reason="needs the bpftool binary")
@pytest.mark.parametrize("obj", ALL_OBJECTS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_repo_object_matches_bpftool(obj):
    """Every committed object (big-endian ones too), in all three formats."""
    from bpfsim.btf.cdump import dump_c
    from bpfsim.errors import BpfError

    def bpftool(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bpftool", *args], capture_output=True, text=True)

    raw = bpftool("btf", "dump", "file", str(obj))
    try:
        btf = read_btf(str(obj))
    except BpfError:
        assert raw.returncode != 0      # no .BTF: bpftool fails too
        return
    assert dump_raw(btf) == raw.stdout
    assert dump_json(btf) == bpftool("-j", "btf", "dump", "file", str(obj)).stdout
    assert dump_c(btf) == bpftool("btf", "dump", "file", str(obj), "format", "c").stdout
