"""Every BPF object in the repository gets the same verifier verdict from the emulator as from
the running kernel: accepted on both, or rejected on both with the same message.  This is what
keeps the emulator's verifier from refusing programs Linux accepts (and vice versa)."""

from __future__ import annotations

from pathlib import Path

import pytest

import bpfsim
import bpfsim.kernel
from bpfsim.errors import BpfError, VerifierError

ROOT = Path(__file__).resolve().parents[2]
OBJECTS = sorted({*ROOT.glob("tests/fixtures/**/*.bpf.o"), *ROOT.glob("examples/**/*.bpf.o"),
                  *ROOT.glob("bench/objects/*.bpf.o")})
# Loader-level refusals (bad objects) are the loader tests' business, not the verifier's.
# CO-RE objects compare too: both loaders relocate against the kernel's BTF.


def _verdict(load, obj: Path, pin_root: str) -> str:
    try:
        with load(obj, pin_root=pin_root):
            return "accepted"
    except VerifierError as exc:
        return f"rejected: {exc.message}"
    except BpfError as exc:
        return f"error: {type(exc).__name__}"


@pytest.mark.kernel
@pytest.mark.parametrize("obj", OBJECTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_verdict_matches_kernel(obj: Path, bpf_pin_dir: str) -> None:
    sim = _verdict(bpfsim.load, obj, bpf_pin_dir)
    kernel = _verdict(bpfsim.kernel.load, obj, bpf_pin_dir)
    if sim.startswith("error") and kernel.startswith("error"):
        return
    assert sim == kernel
