"""Compare what the emulator and the kernel observed, step by step.

Job: turn two lists of observations into a list of `Difference`s, with the normalisation the
two backends need to be comparable: hash-map entries in key order (bucket order is the
kernel's own), trace lines reduced to their message (pid, CPU and timestamps differ), timer
fields as `{}` on both sides (both dumps already do that).  Also runs whole diffs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bpfsim.diff.backends import Backend, KernelBackend, SimBackend
from bpfsim.diff.scenario import Driver, Scenario, Step


@dataclass
class Difference:
    step: str            # "load", "1: run(prog=x)", ...
    what: str            # "retval", "maps.counts", "trace", "verdict", ...
    sim: Any
    kernel: Any

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "what": self.what, "sim": self.sim, "kernel": self.kernel}


def _entry_key(entry: Any) -> str:
    if isinstance(entry, dict):
        return json.dumps(entry.get("key", entry), sort_keys=True)
    return json.dumps(entry, sort_keys=True)


def normalise_dump(entries: Any) -> Any:
    """A map dump in a backend-independent order (sorted by raw key)."""
    if isinstance(entries, list):
        return sorted(entries, key=_entry_key)
    return entries


def compare_observations(step: str, sim: dict[str, Any], kernel: dict[str, Any]) -> list[Difference]:
    diffs: list[Difference] = []
    for what in sorted(set(sim) | set(kernel)):
        a, b = sim.get(what), kernel.get(what)
        if what == "maps" and isinstance(a, dict) and isinstance(b, dict):
            for name in sorted(set(a) | set(b)):
                da, db = normalise_dump(a.get(name)), normalise_dump(b.get(name))
                if da != db:
                    diffs.append(Difference(step, f"maps.{name}", da, db))
            continue
        if a != b:
            diffs.append(Difference(step, what, a, b))
    return diffs


def run_diff(spec: Any, scenario: Scenario, *, sim: Backend | None = None,
             kernel: Backend | None = None) -> list[Difference]:
    """Drive `scenario` through both backends (the emulator first) and compare every step."""
    sim_b = sim if sim is not None else SimBackend()
    ker_b = kernel if kernel is not None else KernelBackend()
    sim_obs = _drive(sim_b, spec, scenario)
    ker_obs = _drive(ker_b, spec, scenario)
    diffs: list[Difference] = []
    for (label, a), (_label, b) in zip(sim_obs, ker_obs):
        diffs.extend(compare_observations(label, a, b))
    return diffs


def _drive(backend: Backend, spec: Any, scenario: Scenario) -> list[tuple[str, dict[str, Any]]]:
    driver = Driver(backend, spec, scenario.base_dir)
    out: list[tuple[str, dict[str, Any]]] = []
    try:
        backend.prepare()
        load = driver.start()
        out.append(("load", load))
        if load.get("verdict") != "accepted":
            return out
        for i, step in enumerate(scenario.steps, 1):
            out.append((f"{i}: {step.describe()}", driver.step(step)))
    finally:
        driver.finish()
        backend.cleanup()
    return out


def default_scenario(prog: str | None, data: str | None, ctx: str | None, repeat: int,
                     advance: int | None) -> Scenario:
    """The scenario `bpfsim diff OBJ [--data ...] [--advance ...]` means."""
    args: dict[str, Any] = {"prog": prog, "repeat": repeat}
    if data is not None:
        args["data"] = str(Path(data).resolve())
    if ctx is not None:
        args["ctx"] = str(Path(ctx).resolve())
    steps = [Step("run", args)]
    if advance:
        steps.append(Step("advance", {"ns": advance}))
    return Scenario(steps, Path("."))
