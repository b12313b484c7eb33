"""Shared by tests/cli and tests/test_bad_input.py: run `bpfsim` in-process and check the
command-line contract (DESIGN.md "Command line": exit 0/1/2, bad input = exactly one line on
stderr and never a traceback).

A session-scoped fixture rather than capsys, so hypothesis tests can call it many times.
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent


@dataclass
class CliResult:
    """What one `bpfsim ARGV...` did: exit code, stdout, stderr."""

    argv: list[str]
    rc: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        """stdout as the one JSON document `--json` promises."""
        return json.loads(self.out)

    def expect_bad_input(self, *fragments: str) -> str:
        """Exit 2 with exactly one stderr line, no traceback, no internal error; the line
        contains every fragment (case-insensitive).  Returns the line."""
        lines = self.err.splitlines()
        assert self.rc == 2, f"{self.argv}: exit {self.rc}, stderr {self.err!r}"
        assert len(lines) == 1, f"{self.argv}: {len(lines)} stderr lines: {self.err!r}"
        assert "Traceback" not in self.err and "internal error" not in self.err, self.err
        for fragment in fragments:
            assert fragment.lower() in lines[0].lower(), f"{fragment!r} not in {lines[0]!r}"
        return lines[0]


def run_bpfsim(*argv: Any) -> CliResult:
    """`bpfsim ARGV...` through `bpfsim.cli.main.main`, capturing its output.  A checked
    failure leaves `main` as SystemExit(1) (the subcommands' `exit_with`); both count."""
    from bpfsim.cli.main import main

    args = [str(a) for a in argv]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(args)
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return CliResult(args, rc, out.getvalue(), err.getvalue())


@pytest.fixture(scope="session")
def bpfsim_cli():
    """The in-process `bpfsim` runner: `bpfsim_cli("run", obj, "--json") -> CliResult`."""
    return run_bpfsim


@pytest.fixture(scope="session")
def repo() -> Path:
    """The source checkout (examples/, bench/, tests/fixtures/)."""
    return REPO
