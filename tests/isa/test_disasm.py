"""The disassembler against llvm-objdump-19: committed golden text for every fixture object
(no llvm needed), the same comparison live when llvm-objdump-19 is installed (every object
under tests/fixtures, and freshly generated random instructions of every form)."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from isa_fixtures import FIXTURES
from isa_forms import random_insn

from bpfsim.cli.cmd_disasm import _load_btf, _sections
from bpfsim.elf.reader import read_elf
from bpfsim.errors import ParseError
from bpfsim.isa.disasm import SectionCode, format_insn, listing
from bpfsim.isa.insn import Instruction, encode_slots, lddw_pair
from bpfsim.isa.opcodes import OPCODES

OBJDUMP = shutil.which("llvm-objdump-19")
LLVM_MC = shutil.which("llvm-mc-19")
GOLDEN = sorted((FIXTURES / "golden").glob("*.txt"))
MODES = {"d": {}, "dr": {"show_relocs": True}, "v4": {"alu32": True}}


def _ours(obj: Path, mode: str) -> str:
    elf = read_elf(obj)
    return listing(obj.name, _sections(elf, _load_btf(elf)), byteorder=elf.byteorder, **MODES[mode])


@pytest.mark.parametrize("golden", GOLDEN, ids=lambda p: p.name)
def test_golden(golden: Path):
    obj_name, mode = golden.name[:-4].rsplit(".", 1)
    assert _ours(FIXTURES / obj_name, mode) == golden.read_text()


def test_golden_covers_every_llvm_form():
    """all_forms.o holds every row llvm-19 can print (the generator's selection)."""
    text = (FIXTURES / "golden" / "all_forms.o.v4.txt").read_text()
    assert text.count("\n") > 3 * len([s for s in OPCODES if s.llvm32 or s.llvm]) - 40


ALL_OBJECTS = sorted(p for p in (FIXTURES.parent).rglob("*.o"))


@pytest.mark.skipif(OBJDUMP is None, reason="llvm-objdump-19 not installed")
@pytest.mark.parametrize("mode", list(MODES))
def test_live_every_fixture_object(mode):
    flags = {"d": ["-d"], "dr": ["-dr"], "v4": ["-d", "--mcpu=v4"]}[mode]
    bad = []
    for obj in ALL_OBJECTS:
        ref = subprocess.run([OBJDUMP, *flags, obj.name], cwd=obj.parent, capture_output=True,
                             text=True, check=True).stdout
        if _ours(obj, mode) != ref:
            bad.append(obj.name)
    assert not bad


@pytest.mark.skipif(OBJDUMP is None or LLVM_MC is None, reason="llvm-mc-19/llvm-objdump-19 not installed")
@pytest.mark.parametrize("seed", range(3))
def test_live_random_instructions(seed, tmp_path):
    rng = random.Random(seed)
    rows = [s for s in OPCODES if (s.llvm or s.llvm32) and "not in llvm-19" not in s.note] * 4
    rng.shuffle(rows)
    n = sum(2 if s.is_lddw else 1 for s in rows)
    insns: list[Instruction] = []
    for s in rows:
        insns += random_insn(s, rng, pc=len(insns), n=n)
    data = encode_slots(insns)
    _llvm_mc_object(tmp_path, data)
    for alu32, extra in ((False, []), (True, ["--mcpu=v4"])):
        ref = subprocess.run([OBJDUMP, "-d", *extra, "r.o"], cwd=tmp_path, capture_output=True,
                             text=True, check=True).stdout
        assert listing("r.o", [SectionCode(".text", data, {0: ["f"]})], alu32=alu32) == ref


def _llvm_mc_object(tmp_path: Path, data: bytes) -> Path:
    src = tmp_path / "r.s"
    src.write_text("\t.text\n\t.globl f\nf:\n" + "".join(
        "\t.byte " + ",".join(str(b) for b in data[k:k + 8]) + "\n" for k in range(0, len(data), 8)))
    subprocess.run([LLVM_MC, "-triple", "bpfel", "-filetype=obj", str(src), "-o", str(tmp_path / "r.o")],
                   check=True)
    return tmp_path / "r.o"


@pytest.mark.skipif(OBJDUMP is None or LLVM_MC is None, reason="llvm-mc-19/llvm-objdump-19 not installed")
@pytest.mark.parametrize("seed", range(2))
def test_live_junk_bytes(seed, tmp_path):
    """Random slots (mostly invalid): we print what llvm-19's decoder makes of them, fields it
    ignores ignored, `<unknown>` elsewhere, zero runs folded to `...`.  Load-acquire and
    store-release are left out: there we print their real meaning on purpose."""
    rng = random.Random(seed)
    words = []
    while len(words) < 2000:
        w = bytearray(rng.randbytes(8))
        if rng.random() < 0.7:
            w[1] = rng.choice([0x00, 0x01, 0x12, 0x21, 0xA0, 0x0A, 0xBB, rng.randrange(256)])
            w[2:4] = rng.choice([b"\0\0", b"\x01\0", b"\x08\0", b"\xf8\xff", bytes(w[2:4])])
            w[4:8] = rng.choice([b"\0\0\0\0", b"\x10\0\0\0", b"\x50\0\0\0", b"\xe1\0\0\0", bytes(w[4:8])])
        if w[0] & 0xE7 == 0xC3 and w[4] in (0x00, 0x10) and w[5] == 0x01:
            continue  # imm 0x100 / 0x110
        words.append(bytes(w))
    data = b"".join(words)
    obj = _llvm_mc_object(tmp_path, data)
    for alu32, extra in ((False, []), (True, ["--mcpu=v4"])):
        ref = subprocess.run([OBJDUMP, "-d", *extra, obj.name], cwd=tmp_path, capture_output=True,
                             text=True, check=True).stdout
        assert listing(obj.name, [SectionCode(".text", data, {0: ["f"]})], alu32=alu32) == ref


def test_format_insn_forms():
    assert format_insn(Instruction(0xB7, 0, 0, 0, 1)) == "r0 = 0x1"
    assert format_insn(Instruction(0x07, 2, 0, 0, -4)) == "r2 += -0x4"
    assert format_insn(Instruction(0x63, 10, 1, -4, 0)) == "*(u32 *)(r10 - 0x4) = r1"
    assert format_insn(Instruction(0x63, 10, 1, -4, 0), alu32=True) == "*(u32 *)(r10 - 0x4) = w1"
    assert format_insn(lddw_pair(1, 0, 0x1122334455667788)[0]) == "r1 = 0x1122334455667788 ll"
    assert format_insn(lddw_pair(1, 0, (1 << 64) - 1)[0]) == "r1 = -0x1 ll"
    assert format_insn(Instruction(0x25, 1, 0, 3, 5)) == "if r1 > 0x5 goto +0x3"
    assert format_insn(Instruction(0x85, 0, 1, 0, 3)) == "call 0x3"
    assert format_insn(Instruction(0x85, 0, 1, 0, 3), roundtrip=True) == "call local +0x3"
    assert format_insn(Instruction(0x85, 0, 1, 0, 3), dialect="conformance") == "call local +3"
    assert format_insn(Instruction(0x8D, 3)) == "callx r3"
    assert format_insn(Instruction(0xC3, 1, 2, 0, 0x50)) == "<unknown>"  # llvm-19 without --mcpu
    assert format_insn(Instruction(0xC3, 1, 2, 0, 0x50), alu32=True) == "lock *(u32 *)(r1 + 0x0) &= w2"
    assert format_insn(Instruction(0xDB, 1, 2, 8, 0x100)) == "r1 = load_acquire((u64 *)(r2 + 0x8))"
    assert format_insn(Instruction(0xFF)) == "<unknown>"
    assert format_insn(Instruction(0xBF, 1, 2, 0, 5)) == "r1 = r2"  # llvm ignores imm here
    assert format_insn(Instruction(0xBF, 1, 12)) == "<unknown>"  # no r12 in llvm
    assert format_insn(Instruction(0xC3, 1, 2, 0, 0x07)) == "lock *(u32 *)(r1 + 0x0) += r2"
    with pytest.raises(ParseError):
        format_insn(Instruction(0xFF), dialect="conformance")


def test_listing_layout():
    code = encode_slots([Instruction(0x05, 0, 0, 1, 0), Instruction(0xB7), Instruction(0x95),
                         Instruction(0x95)])
    out = listing("x.o", [SectionCode("s", code, {16: ["g"]}), SectionCode(".text", b"")])
    assert out == ("\nx.o:\tfile format elf64-bpf\n\nDisassembly of section s:\n\n"
                   "0000000000000000 <s>:\n"
                   "       0:\t05 00 01 00 00 00 00 00\tgoto +0x1 <g>\n"
                   "       1:\tb7 00 00 00 00 00 00 00\tr0 = 0x0\n\n"
                   "0000000000000010 <g>:\n"
                   "       2:\t95 00 00 00 00 00 00 00\texit\n"
                   "       3:\t95 00 00 00 00 00 00 00\texit\n")


def test_cli_disasm(capsys):
    from bpfsim.cli.main import main

    obj = FIXTURES / "calls.bpf.o"
    cwd = os.getcwd()
    os.chdir(FIXTURES)
    try:
        assert main(["disasm", "calls.bpf.o"]) == 0
        assert capsys.readouterr().out == (FIXTURES / "golden" / "calls.bpf.o.d.txt").read_text()
        assert main(["disasm", "--json", "calls.bpf.o"]) == 0
        import json

        doc = json.loads(capsys.readouterr().out)
        assert [s["name"] for s in doc["sections"]] == [".text", "tc", "xdp"]
        assert doc["sections"][1]["insns"][0]["symbol"] == "calls"
        assert main(["disasm", "--source", "calls.bpf.o"]) == 0
        src = capsys.readouterr().out
        assert "; \tbpf_loop(10, loop_cb, &acc, 0);" in src or "bpf_loop(10, loop_cb" in src
        assert main(["disasm", "nonexistent.o"]) == 2
    finally:
        os.chdir(cwd)
    assert obj.exists()
