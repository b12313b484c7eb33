"""`bpfsim conformance` (text, --json, exit codes) and the plugin protocol."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from bpfsim.cli.main import main
from bpfsim.conformance import plugin

DATA = Path(__file__).parent / "data"


def test_whole_suite_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["conformance", str(DATA)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "313 passed, 0 failed"


def test_failures_are_listed_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.data"
    bad.write_text("-- asm\nmov %r0, 1\nexit\n-- result\n0x2\n")
    with pytest.raises(SystemExit) as info:
        main(["conformance", str(bad), str(DATA / "add.data")])
    assert info.value.code == 1
    out = capsys.readouterr().out.splitlines()
    assert out == ["FAIL bad.data: expected 0x2, got 0x1", "1 passed, 1 failed"]


def test_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "fault.data"
    bad.write_text("-- asm\nldxw %r0, [%r1]\nexit\n-- result\n0x0\n")
    with pytest.raises(SystemExit):
        main(["conformance", "--json", str(bad), str(DATA / "add.data")])
    doc = json.loads(capsys.readouterr().out)
    assert doc["passed"] == 1 and doc["failed"] == 1
    first = doc["results"][0]
    assert set(first) >= {"file", "ok", "expected", "got", "error"}
    assert first["ok"] is False and "pc 0" in first["error"]


def test_bad_usage_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["conformance"]) == 2
    assert main(["conformance", "/nonexistent/x.data"]) == 2
    assert "no such file" in capsys.readouterr().err


def _plugin(args: list[str], stdin: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = plugin.main(args, io.StringIO(stdin), out, err)
    return rc, out.getvalue(), err.getvalue()


def test_plugin_protocol() -> None:
    # ldxdw r0, [r1]; exit -- program bytes as the runner writes them ("%02x  " per byte)
    prog = "79  10  00  00  00  00  00  00  95  00  00  00  00  00  00  00  \n"
    assert _plugin(["11  22  33  44  55  66  77  88  ", ""], prog) == (0, "8877665544332211\n", "")
    rc, out, err = _plugin(["11 22"], prog)
    assert rc != 0 and out == "" and "invalid read" in err
    assert _plugin(["--program", "b7 00 00 00 ff ff ff ff 95 00 00 00 00 00 00 00"])[1] == \
        "ffffffffffffffff\n"
    assert _plugin(["", "--elf"], prog)[0] != 0
    assert _plugin([], "b7 00 00\n")[0] != 0


def test_plugin_through_the_cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("b7 00 00 00 05 00 00 00 95 00 00 00 00 00 00 00\n"))
    with pytest.raises(SystemExit) as info:
        main(["conformance", "--plugin", "", ""])
    assert info.value.code == 0
    assert capsys.readouterr().out == "5\n"
