"""Every vendored bpf_conformance `.data` file, one test each, through the reference interpreter."""

from __future__ import annotations

from pathlib import Path

import pytest

from bpfsim.conformance import run_file

DATA = Path(__file__).parent / "data"
FILES = sorted(p.name for p in DATA.glob("*.data"))


def test_all_files_are_vendored() -> None:
    assert len(FILES) == 313


@pytest.mark.parametrize("name", FILES)
def test_conformance(name: str) -> None:
    result = run_file(DATA / name)
    assert result.skipped is None
    assert result.ok, f"expected {result.expected}, got {result.got}, error {result.error}"
