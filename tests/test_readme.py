"""The README stays true: its Python example runs as written, and its first command's main job
(`bpfsim run` on the bundled timer example) prints what the README says."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from bpfsim.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_python_example_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    block = re.search(r"```python\n(.*?)```", README, re.S)
    assert block is not None
    monkeypatch.chdir(ROOT)
    exec(compile(block.group(1), "README.md", "exec"), {})


def test_main_job_command(capsys: pytest.CaptureFixture[str]) -> None:
    first = README.split("```sh\n", 1)[1].splitlines()[0]
    job = first.split("&& bpfsim ", 1)[1].split()
    assert job[0] == "run"
    old = os.getcwd()
    os.chdir(ROOT)
    try:
        assert main(job) == 0
    finally:
        os.chdir(old)
    out = capsys.readouterr().out
    assert "retval    0" in out
    for event in ("init", "set_callback", "start", "cancel"):
        assert event in out
    assert "trace     (empty)" in out
