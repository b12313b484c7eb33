"""Scenario parsing and observation comparison (no kernel needed)."""

from __future__ import annotations

import pytest

from bpfsim.diff import parse_scenario
from bpfsim.diff.compare import compare_observations, normalise_dump
from bpfsim.errors import UsageError


def test_parse_all_step_kinds() -> None:
    sc = parse_scenario({"steps": [
        {"run": {"prog": "p", "data": "hex:00ff"}},
        {"advance": "50ms"},
        {"map_update": {"map": "m", "key": 1, "value": 2}},
        {"map_delete": {"map": "m", "key": 1}},
        {"pin_prog": {"prog": "p", "path": "x"}},
        {"close": "collection"},
        {"run_pinned": {"path": "x"}},
        {"unpin": "x"},
        "dump",
    ]})
    kinds = [s.kind for s in sc.steps]
    assert kinds == ["run", "advance", "map_update", "map_delete", "pin_prog", "close", "run_pinned",
                     "unpin", "dump"]
    assert sc.steps[1].args == {"ns": 50_000_000}


@pytest.mark.parametrize("doc", [
    {}, {"steps": []}, {"steps": [{"explode": {}}]}, {"steps": [{"run": 3}]},
    {"steps": [{"advance": "soon"}]}, {"steps": [{"run": {}, "advance": "1s"}]},
])
def test_bad_scenarios_are_usage_errors(doc: object) -> None:
    with pytest.raises(UsageError):
        parse_scenario(doc)


def test_hash_dumps_compare_in_key_order() -> None:
    a = [{"key": ["0x02"], "value": ["0x01"]}, {"key": ["0x01"], "value": ["0x01"]}]
    assert normalise_dump(a) == normalise_dump(list(reversed(a)))
    assert compare_observations("s", {"maps": {"m": a}}, {"maps": {"m": list(reversed(a))}}) == []


def test_differences_name_the_step_and_field() -> None:
    diffs = compare_observations("1: run", {"retval": 0, "trace": ["x"]}, {"retval": 1, "trace": ["x"]})
    assert [(d.step, d.what, d.sim, d.kernel) for d in diffs] == [("1: run", "retval", 0, 1)]


def test_ignored_fields_drop_raw_bytes_and_the_field() -> None:
    from bpfsim.diff.compare import parse_ignores

    a = [{"key": ["0x01"], "value": ["0x05"], "formatted": {"key": 1, "value": {"n": 1, "t": 5}}}]
    b = [{"key": ["0x01"], "value": ["0x09"], "formatted": {"key": 1, "value": {"n": 1, "t": 9}}}]
    assert compare_observations("s", {"maps": {"m": a}}, {"maps": {"m": b}}) != []
    assert compare_observations("s", {"maps": {"m": a}}, {"maps": {"m": b}}, parse_ignores(["m.t"])) == []
    with pytest.raises(UsageError):
        parse_ignores(["nodot"])


def test_ignore_an_element_of_a_global_array() -> None:
    """`.bss.res.1`: map `.bss` (the leading dot kept), variable `res`, element 1 -- only it."""
    from bpfsim.diff.compare import parse_ignores

    def dump(res: list[int]) -> list[dict]:
        return [{"key": ["0x00"], "value": [hex(x) for x in res],
                 "formatted": {"value": {".bss": [{"res": res}, {"other": 3}]}}}]

    ign = parse_ignores([".bss.res.1"])
    assert ign == {".bss": [["res", "1"]]}
    assert compare_observations("s", {"maps": {".bss": dump([1, 2])}},
                                {"maps": {".bss": dump([1, 9])}}, ign) == []
    assert compare_observations("s", {"maps": {".bss": dump([1, 2])}},
                                {"maps": {".bss": dump([5, 9])}}, ign) != []


def test_raw_ignore_compares_keys_through_btf_only() -> None:
    """`m.@raw`: a key whose padding hole differs (uninitialised stack) compares equal."""
    from bpfsim.diff.compare import parse_ignores

    a = [{"key": ["0x01", "0x00"], "value": ["0x01"], "formatted": {"key": {"a": 1}, "value": 1}}]
    b = [{"key": ["0x01", "0xff"], "value": ["0x01"], "formatted": {"key": {"a": 1}, "value": 1}}]
    assert compare_observations("s", {"maps": {"m": a}}, {"maps": {"m": b}}) != []
    assert compare_observations("s", {"maps": {"m": a}}, {"maps": {"m": b}},
                                parse_ignores(["m.@raw"])) == []


def test_ignore_a_run_field() -> None:
    from bpfsim.diff.compare import parse_ignores

    ign = parse_ignores(["retval"])
    assert compare_observations("1: run", {"retval": 1, "data_out": "00"},
                                {"retval": 2, "data_out": "00"}, ign) == []
    assert compare_observations("1: run", {"retval": 1, "data_out": "00"},
                                {"retval": 2, "data_out": "01"}, ign) != []
    with pytest.raises(UsageError):
        parse_ignores([".bss"])


def test_explain_shows_only_the_differing_entries() -> None:
    from bpfsim.diff.compare import Difference, explain

    sim = [{"key": ["0x01"], "formatted": {"key": 1, "value": 5}},
           {"key": ["0x02"], "formatted": {"key": 2, "value": 7}}]
    ker = [{"key": ["0x01"], "formatted": {"key": 1, "value": 5}},
           {"key": ["0x02"], "formatted": {"key": 2, "value": 8}},
           {"key": ["0x03"], "formatted": {"key": 3, "value": 1}}]
    lines = explain(Difference("1: run", "maps.m", sim, ker))
    assert lines == ["key 2:", "  sim    : 7", "  kernel : 8", "key 3: only in kernel : 1"]
    lines = explain(Difference("2: advance", "trace", ["a", "b"], ["a"]))
    assert lines == ["line 2:", "  sim    : b", "  kernel : (none)"]
