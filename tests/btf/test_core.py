"""CO-RE relocation (btf/core.py, a port of libbpf relo_core.c).

The reference is libbpf itself: `bpftool -d prog load` logs every relocation it applies
against the running kernel's BTF ("relo #N: patched insn #I (...) imm X -> Y"); our result
for the same record against /sys/kernel/btf/vmlinux must be the same.  Without a kernel:
relocating an object against its own BTF changes nothing, and a hand-made target checks
offsets, flavors, bitfields, poisoning and instruction patching."""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpfsim.btf import Btf, BtfType, EnumValue, Member
from bpfsim.btf.core import POISON_IMM, CoreResult, calc_relo, essential_name_len, patch_insns
from bpfsim.btf.ext import CoreRelo
from bpfsim.cli.cmd_btf import read_btf
from bpfsim.elf.reader import read_elf
from bpfsim.errors import LinkError
from bpfsim.isa.insn import Instruction, decode_slots, lddw_pair

from . import kbpf
from .conftest import FIXTURES, load_ext


def test_essential_names():
    assert essential_name_len("task_struct___v2") == len("task_struct")
    assert essential_name_len("a___b___c") == len("a___b")
    assert essential_name_len("x____y") == len("x____y")      # X___Y needs X, Y not '_'
    assert essential_name_len("___x") == 4


@pytest.mark.parametrize("obj", ["core.bpf.o", "core_kernel.bpf.o"])
def test_relocating_against_own_btf_changes_nothing(obj):
    btf, ext = load_ext(obj)
    elf = read_elf(FIXTURES / obj)
    for sec, relos in ext.core_relos.items():
        insns = decode_slots(elf.section(sec).data, elf.byteorder)
        before = list(insns)
        for r in relos:
            # each root type as its own only candidate (by name, task_struct___old would be a
            # flavor candidate of task_struct here and make libbpf report an ambiguity)
            res = calc_relo(btf, r, btf, candidates=[r.type_id])
            assert not res.poison and res.new_val == res.orig_val, r
            if res.validate:        # bitfield relos are not validated: clang's value may differ
                patch_insns(insns, r.insn, res)
        assert insns == before


def _target() -> Btf:
    """`struct task` with pid moved, `inner` grown, and `enum state` renumbered."""
    b = Btf()
    i32 = b.add(BtfType("INT", "int", size=4, encoding=1, nr_bits=32))
    i64 = b.add(BtfType("INT", "long", size=8, encoding=1, nr_bits=64))
    u32 = b.add(BtfType("INT", "unsigned int", size=4, nr_bits=32))
    inner = b.add(BtfType("STRUCT", "", size=24, kflag=True, members=[
        Member("pad", i64, 0), Member("a", i64, 64), Member("flags", u32, 131, 3)]))
    b.add(BtfType("STRUCT", "task", size=40, members=[Member("x", i64, 0), Member("inner", inner, 64),
                                                       Member("pid", i32, 256)]))
    b.add(BtfType("ENUM", "state", size=4, values=[EnumValue("BUSY", 9), EnumValue("IDLE", 0)]))
    return b


def test_relocation_against_a_changed_layout():
    btf, ext = load_ext("core.bpf.o")
    targ = _target()
    got = {(r.access_str, r.kind_name): calc_relo(btf, r, targ).new_val
           for relos in ext.core_relos.values() for r in relos}
    assert got == {("0:0", "field_exists"): 1, ("0", "type_exists"): 1, ("1", "enumval_value"): 9,
                   ("0:1", "byte_sz"): 24, ("0:1:0", "byte_off"): 16}


def test_missing_field_poisons_and_missing_type_is_zero():
    btf, ext = load_ext("core.bpf.o")
    empty = Btf()
    relos = {r.kind_name: r for rs in ext.core_relos.values() for r in rs}
    assert calc_relo(btf, relos["field_exists"], empty).new_val == 0
    assert calc_relo(btf, relos["type_exists"], empty).new_val == 0
    assert calc_relo(btf, relos["byte_off"], empty).poison
    insns = [Instruction(0x61, 1, 2, 8, 0), Instruction(0x95)]
    patch_insns(insns, 0, CoreResult(poison=True))
    assert insns[0] == Instruction(0x85, 0, 0, 0, POISON_IMM)


def test_patching_forms():
    ldx = [Instruction(0x61, 1, 2, 8, 0)]                        # r1 = *(u32 *)(r2 + 8)
    patch_insns(ldx, 0, CoreResult(orig_val=8, new_val=24, orig_sz=4, new_sz=8))
    assert ldx[0] == Instruction(0x79, 1, 2, 24, 0)             # now a u64 load at +24
    alu = [Instruction(0xB7, 0, 0, 0, 4)]                        # r0 = 4
    patch_insns(alu, 0, CoreResult(orig_val=4, new_val=24))
    assert alu[0].imm == 24
    ld = lddw_pair(1, 0, 2)
    patch_insns(ld, 0, CoreResult(orig_val=2, new_val=1 << 40))
    assert ld[0].imm64 == 1 << 40 and ld[1].imm == 1 << 8
    with pytest.raises(LinkError, match="unexpected insn #0"):
        patch_insns([Instruction(0xB7, 0, 0, 0, 5)], 0, CoreResult(orig_val=4, new_val=24))


def test_flavor_ambiguity_is_refused():
    btf, ext = load_ext("core_kernel.bpf.o")
    pid = next(r for r in ext.core_relos["tp_btf/sched_switch"] if r.access_str == "0:0"
               and btf.name_of(r.type_id) == "task_struct")
    with pytest.raises(LinkError, match="field offset ambiguity"):
        calc_relo(btf, pid, btf)          # task_struct and task_struct___old disagree on pid


def test_bad_access_string():
    btf, _ = load_ext("core.bpf.o")
    with pytest.raises(LinkError, match="invalid access string"):
        calc_relo(btf, CoreRelo(0, btf.find("task"), "0:9", 0), btf)


VMLINUX = Path("/sys/kernel/btf/vmlinux")
PIN = "/sys/fs/bpf/bpfsim_core_probe"


@pytest.mark.kernel
@pytest.mark.skipif(not kbpf.available() or not shutil.which("bpftool") or not VMLINUX.exists(),
                    reason="needs root, bpftool and /sys/kernel/btf/vmlinux")
def test_matches_libbpf_against_running_kernel():
    out = subprocess.run(["bpftool", "-d", "prog", "load", str(FIXTURES / "core_kernel.bpf.o"), PIN],
                         capture_output=True, text=True).stderr
    subprocess.run(["rm", "-f", PIN])
    libbpf: dict[int, tuple] = {}
    patched = r"relo #(\d+): patched insn #(\d+) \(([A-Z/0-9]+)\) (?:imm64|imm|off) (\d+) -> (\d+)"
    for m in re.finditer(patched, out):
        libbpf[int(m[1])] = ("patched", int(m[2]), int(m[4]), int(m[5]))
    for m in re.finditer(r"relo #(\d+): substituting insn #(\d+)", out):
        libbpf[int(m[1])] = ("poisoned", int(m[2]))
    btf, ext = load_ext("core_kernel.bpf.o")
    relos = ext.core_relos["tp_btf/sched_switch"]
    assert len(libbpf) == len(relos) >= 32, out[-2000:]
    vmlinux = read_btf(str(VMLINUX))
    for i, r in enumerate(relos):
        res = calc_relo(btf, r, vmlinux)
        if res.poison:
            assert libbpf[i] == ("poisoned", r.insn), (i, r)
            continue
        kind, insn, before, after = libbpf[i]
        assert (kind, insn, after) == ("patched", r.insn, res.new_val), (i, r, res)
        if res.validate:               # libbpf prints the instruction's value, == orig_val then
            assert before == res.orig_val, (i, r, res)


def test_accepts_spec_core_relo():
    """The loader's linked record (spec.CoreRelo: insn slot, access) works as well."""
    from bpfsim.spec import CoreRelo as SpecCoreRelo

    btf, ext = load_ext("core.bpf.o")
    (r,) = ext.core_relos[".text"]
    res = calc_relo(btf, SpecCoreRelo(7, r.type_id, r.access_str, r.kind), _target())
    assert (res.orig_val, res.new_val) == (8, 16)



_FUZZ_BTF = load_ext("core_kernel.bpf.o")[0]


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 40), st.lists(st.integers(-2, 40), min_size=0, max_size=6), st.integers(0, 14))
def test_fuzz_relo_records_raise_only_bpf_errors(type_id, path, kind):
    """Any record, however wrong, gives a result or a BpfError (never an IndexError...)."""
    from bpfsim.errors import BpfError

    btf = _FUZZ_BTF
    relo = CoreRelo(0, type_id, ":".join(map(str, path)), kind)
    with contextlib.suppress(BpfError):
        calc_relo(btf, relo, btf)
