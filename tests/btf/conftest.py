"""Shared helpers of the btf tests: the committed fixtures and their BTF."""

from __future__ import annotations

from pathlib import Path

import pytest

from bpfsim.btf import Btf
from bpfsim.btf.ext import BtfExt
from bpfsim.elf.reader import STB_GLOBAL, STB_WEAK, read_elf

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "btf"


def raw_btf(name: str) -> bytes:
    return read_elf(FIXTURES / name).section(".BTF").data


def load_btf(name: str, fixup: bool = False) -> Btf:
    """The object's BTF; with `fixup`, DATASECs fixed up from the ELF like libbpf does."""
    elf = read_elf(FIXTURES / name)
    btf = Btf.parse(elf.section(".BTF").data, elf.byteorder)
    if fixup:
        for tid, t in enumerate(btf.types):
            if t.kind != "DATASEC":
                continue
            sec = elf.section(t.name)
            syms = {s.name: s.value for s in elf.symbols
                    if s.bind in (STB_GLOBAL, STB_WEAK) and elf.symbol_section(s) is sec}
            btf.fixup_datasec(tid, sec.size if sec else 0, syms)
    return btf


def load_ext(name: str) -> tuple[Btf, BtfExt]:
    elf = read_elf(FIXTURES / name)
    btf = Btf.parse(elf.section(".BTF").data, elf.byteorder)
    return btf, BtfExt.parse(elf.section(".BTF.ext").data, btf, elf.byteorder)


@pytest.fixture(scope="session")
def types_btf() -> Btf:
    return load_btf("types.bpf.o", fixup=True)
