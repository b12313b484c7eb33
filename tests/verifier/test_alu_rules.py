"""check_alu_op's constant checks (invalid shift, div by zero) on both backends, on small
assembled programs."""

from __future__ import annotations

import pytest

import bpfsim
import bpfsim.kernel
from bpfsim.errors import VerifierError
from bpfsim.isa.asm import assemble
from bpfsim.spec import CollectionSpec, ProgramSpec
from bpfsim.uapi import ProgType

PROGRAMS = {
    "lsh64_64": ("mov %r0, 1\nlsh %r0, 64\nexit", ("invalid shift 64", 22)),
    "rsh32_32": ("mov32 %r0, 1\nrsh32 %r0, 32\nexit", ("invalid shift 32", 22)),
    "arsh_neg": ("mov %r0, 1\narsh %r0, -1\nexit", ("invalid shift -1", 22)),
    "div_zero": ("mov %r0, 1\ndiv %r0, 0\nexit", ("div by zero", 22)),
    "mod32_zero": ("mov %r0, 1\nmod32 %r0, 0\nexit", ("div by zero", 22)),
    "lsh_63_ok": ("mov %r0, 1\nlsh %r0, 63\nrsh %r0, 63\nexit", None),
}


def _spec(text: str) -> CollectionSpec:
    prog = ProgramSpec(name="p", section="xdp", type=ProgType.XDP, instructions=assemble(text),
                       license="GPL")
    return CollectionSpec(programs={"p": prog})


def _verdict(load, text: str) -> tuple[str, int] | None:
    try:
        with load(_spec(text)):
            return None
    except VerifierError as exc:
        return exc.message, exc.errno


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_emulator_verdict(name: str) -> None:
    text, want = PROGRAMS[name]
    assert _verdict(bpfsim.load, text) == want


@pytest.mark.kernel
@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_same_verdict_as_kernel(name: str) -> None:
    text, _ = PROGRAMS[name]
    assert _verdict(bpfsim.load, text) == _verdict(bpfsim.kernel.load, text)
