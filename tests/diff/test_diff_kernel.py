"""`bpfsim diff` against the running kernel: every example, bench object and fixture agrees
(minus the documented per-program ignores), a deliberately wrong emulator disagrees, and a
multi-step timer-lifetime scenario agrees."""

from __future__ import annotations

from pathlib import Path

import pytest

import bpfsim
from bpfsim.diff import Scenario, Step, default_scenario, parse_scenario, run_diff
from bpfsim.errors import BpfError

ROOT = Path(__file__).resolve().parents[2]
PKT = ROOT / "bench" / "pkt_64.bin"

pytestmark = pytest.mark.kernel


def _objects() -> list[Path]:
    found = sorted((ROOT / "examples").glob("**/*.bpf.o"))
    found += sorted((ROOT / "bench" / "objects").glob("*.bpf.o"))
    found += sorted((ROOT / "tests" / "fixtures").glob("**/*.bpf.o"))
    return found


def _runnable(spec: object) -> list[str]:
    """Programs that load (autoload on) and whose type BPF_PROG_TEST_RUN supports on the
    kernel (others are a documented kernel limitation, not a difference)."""
    from bpfsim.uapi import ProgType

    ok = {ProgType.SOCKET_FILTER, ProgType.SCHED_CLS, ProgType.SCHED_ACT, ProgType.XDP,
          ProgType.CGROUP_SKB, ProgType.SYSCALL}
    return [n for n, p in spec.programs.items()  # type: ignore[attr-defined]
            if p.type in ok and getattr(p, "autoload", True)]


# What legitimately differs between the backends, per (object, program); each entry is
# documented in docs/architecture.md "Diff contract".  Only these fields are skipped.
IGNORES: dict[tuple[str, str | None], tuple[str, ...]] = {
    # clock readings (bpf_ktime_get_ns / bpf_ktime_get_boot_ns)
    ("flow_expiry.bpf.o", None): ("flows.first_seen", "flows.last_seen"),
    ("calls.bpf.o", "calls"): ("retval", ".bss.total"),          # total += ... + ktime
    ("helpers.bpf.o", "helpers"): (".bss.res.12", ".bss.res.13"),
    ("timer_rules.bpf.o", "tc_arm"): ("tarr.stamp", "tarr.boot_stamp"),
    # the key struct's padding is uninitialised stack (verifier: allow_uninit_stack for root):
    # kernel garbage vs the emulator's zeroed stack -- compared through BTF only
    ("globals.bpf.o", "xdp_count"): ("lru.@raw",),
}


def _ignores(obj: Path, prog: str) -> tuple[str, ...]:
    return IGNORES.get((obj.name, prog), IGNORES.get((obj.name, None), ()))


@pytest.mark.parametrize("obj", _objects(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_example_bench_object_and_fixture_is_equal(obj: Path) -> None:
    try:
        spec = bpfsim.load_spec(obj)
    except BpfError as exc:       # deliberately malformed fixtures (tests/fixtures/**/bad)
        pytest.skip(f"not loadable by design: {exc}")
    names = _runnable(spec)
    if not names:
        pytest.skip("no program type BPF_PROG_TEST_RUN supports")
    for name in names:
        prog_type = spec.programs[name].type
        data = None if prog_type == 31 else str(PKT)   # SYSCALL takes ctx, not data
        diffs = run_diff(spec, default_scenario(name, data, None, 1, None),
                         ignore=_ignores(obj, name))
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


@pytest.mark.skipif(not (TIMER / "timer.bpf.o").exists(), reason="timer example not built")
@pytest.mark.parametrize(("scenario", "retval"), [("lifetime.yaml", 1), ("lifetime_pinned_map.yaml", 0)])
def test_bundled_lifetime_scenarios(scenario: str, retval: int) -> None:
    """The documentation's surprise, on both backends: pinning only the program leaves the map
    without a user reference (init -> -EPERM, retval 1); pinning the map too gives 0."""
    from bpfsim.diff import load_scenario, run_diff_steps

    diffs, steps = run_diff_steps(bpfsim.load_spec(TIMER / "timer.bpf.o"), load_scenario(TIMER / scenario))
    assert diffs == []
    runs = [s for s in steps if s["step"].split(": ", 1)[-1].startswith("run_pinned")]
    assert [(s["sim"]["retval"], s["kernel"]["retval"]) for s in runs] == [(retval, retval)]
