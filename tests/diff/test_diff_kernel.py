"""`bpfsim diff` against the running kernel: every example and fixture agrees, a deliberately
wrong emulator disagrees, and a multi-step timer-lifetime scenario agrees."""

from __future__ import annotations

from pathlib import Path

import pytest

import bpfsim
from bpfsim.diff import Scenario, Step, default_scenario, parse_scenario, run_diff

ROOT = Path(__file__).resolve().parents[2]
PKT = ROOT / "bench" / "pkt_64.bin"

pytestmark = pytest.mark.kernel


def _objects() -> list[Path]:
    found = sorted((ROOT / "examples").glob("**/*.bpf.o"))
    found += sorted((ROOT / "bench" / "objects").glob("*.bpf.o"))
    return found


def _runnable(spec: object) -> list[str]:
    """Programs whose type BPF_PROG_TEST_RUN supports on the kernel (others are a documented
    kernel limitation, not a difference)."""
    from bpfsim.uapi import ProgType

    ok = {ProgType.SOCKET_FILTER, ProgType.SCHED_CLS, ProgType.SCHED_ACT, ProgType.XDP,
          ProgType.CGROUP_SKB, ProgType.SYSCALL}
    return [n for n, p in spec.programs.items() if p.type in ok]  # type: ignore[attr-defined]


# Fields that read the clock: equal only up to the clock (a documented, expected difference).
CLOCK_FIELDS = {"flow_expiry.bpf.o": ("flows.first_seen", "flows.last_seen")}


@pytest.mark.parametrize("obj", _objects(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_example_and_bench_object_is_equal(obj: Path) -> None:
    spec = bpfsim.load_spec(obj)
    for name in _runnable(spec):
        prog_type = spec.programs[name].type
        data = None if prog_type == 31 else str(PKT)   # SYSCALL takes ctx, not data
        diffs = run_diff(spec, default_scenario(name, data, None, 1, None),
                         ignore=CLOCK_FIELDS.get(obj.name, ()))
        assert diffs == [], f"{obj.name}:{name}: {[d.to_dict() for d in diffs]}"


def test_a_wrong_emulator_makes_the_diff_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    """Patch bpf_ktime_get_ns-free, observable helper: bpf_map_update_elem now stores nothing."""
    import bpfsim.runtime.helpers as helpers

    obj = ROOT / "examples" / "counter" / "counter.bpf.o"
    if not obj.exists():
        pytest.skip("counter example not built")
    spec = bpfsim.load_spec(obj)
    name = _runnable(spec)[0]
    assert run_diff(spec, default_scenario(name, str(PKT), None, 1, None)) == []
    table = helpers.HELPERS if hasattr(helpers, "HELPERS") else helpers.helper_table()
    monkeypatch.setitem(table, 2, lambda env, *args: 0)   # bpf_map_update_elem: a silent no-op
    diffs = run_diff(spec, default_scenario(name, str(PKT), None, 1, None))
    assert any(d.what.startswith("maps.") for d in diffs)


TIMER = ROOT / "examples" / "timer"


@pytest.mark.skipif(not (TIMER / "timer.bpf.o").exists(), reason="timer example not built")
def test_timer_lifetime_scenario_is_equal() -> None:
    """The documentation example loaded like `bpftool prog load`: the program pinned, the
    collection closed -> init gets -EPERM and the program returns 1; pin the map too -> 0."""
    spec = bpfsim.load_spec(TIMER / "timer.bpf.o")
    prog = next(iter(spec.programs))
    sc = parse_scenario({"steps": [
        {"pin_prog": {"prog": prog, "path": "prog"}},
        {"close": "collection"},
        {"run_pinned": {"path": "prog", "data": f"hex:{bytes(64).hex()}"}},
        {"unpin": "prog"},
    ]})
    diffs = run_diff(spec, sc)
    assert diffs == []


def test_default_scenario_shape() -> None:
    sc = default_scenario("p", None, None, 3, 5)
    assert isinstance(sc, Scenario)
    assert sc.steps == [Step("run", {"prog": "p", "repeat": 3}), Step("advance", {"ns": 5})]
    assert default_scenario("p", None, None, 1, None).steps[1] == Step("advance", {"ns": 0})
