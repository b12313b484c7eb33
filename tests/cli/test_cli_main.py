"""`bpfsim.cli.main.main`'s own contract: every error is one stderr line; a bug is still one
line (with the traceback on request); Ctrl-C is 130."""

from __future__ import annotations

import pytest

import bpfsim
from bpfsim.cli.main import describe, one_line
from bpfsim.errors import ParseError, VerifierError


def _raise(exc: BaseException):
    def fn(*_a, **_k):
        raise exc
    return fn


def test_a_bug_is_one_line_not_a_traceback(bpfsim_cli, repo, monkeypatch) -> None:
    monkeypatch.delenv("BPFSIM_TRACEBACK", raising=False)
    monkeypatch.setattr(bpfsim, "load_spec", _raise(ZeroDivisionError("boom\nsecond line")))
    res = bpfsim_cli("run", repo / "examples/counter/counter.bpf.o")
    assert res.rc == 2
    assert res.err.splitlines() == [
        "bpfsim: internal error (a bug in bpfsim; BPFSIM_TRACEBACK=1 shows where): "
        "ZeroDivisionError: boom; second line"]


def test_traceback_on_request(bpfsim_cli, repo, monkeypatch) -> None:
    monkeypatch.setenv("BPFSIM_TRACEBACK", "1")
    monkeypatch.setattr(bpfsim, "load_spec", _raise(ZeroDivisionError("boom")))
    with pytest.raises(ZeroDivisionError):
        bpfsim_cli("run", repo / "examples/counter/counter.bpf.o")


def test_keyboard_interrupt(bpfsim_cli, repo, monkeypatch) -> None:
    monkeypatch.setattr(bpfsim, "load_spec", _raise(KeyboardInterrupt()))
    res = bpfsim_cli("run", repo / "examples/counter/counter.bpf.o")
    assert res.rc == 130 and res.err.splitlines()[-1] == "bpfsim: interrupted"


def test_multi_line_bpf_error_is_joined(bpfsim_cli, repo, monkeypatch) -> None:
    monkeypatch.setattr(bpfsim, "load_spec", _raise(ParseError("first\n  second\n\nthird")))
    res = bpfsim_cli("run", repo / "examples/counter/counter.bpf.o")
    assert res.err == "bpfsim: error: first; second; third\n"


def test_verifier_error_line() -> None:
    exc = VerifierError("R1 type=fp expected=map_value", program="prog", pc=5,
                        log="0: (b7) r1 = 0\n1: ...\nR1 type=fp expected=map_value\nprocessed 5 insns\n")
    assert "\n" in str(exc)                      # the kernel-style tail, several lines
    assert describe(exc) == "verifier rejected program prog: R1 type=fp expected=map_value (insn 5)"
    assert one_line("") == "(no message)"
