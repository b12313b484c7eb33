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


# Run observations `--ignore` may name bare (a run that returns a clock reading, say).
RUN_FIELDS = ("retval", "data_out", "ctx_out")
# `--ignore MAP.@raw`: compare the map's keys and values through BTF only, so padding holes
# (uninitialised stack bytes copied in by the program: the kernel's are garbage, the
# emulator's zero) are not compared.
RAW = "@raw"


def _entry_key(entry: Any) -> str:
    if isinstance(entry, dict):
        key = entry.get("key")
        if key is None and isinstance(entry.get("formatted"), dict):
            key = entry["formatted"].get("key")
        return json.dumps(key if key is not None else entry, sort_keys=True)
    return json.dumps(entry, sort_keys=True)


def normalise_dump(entries: Any, ignore: list[list[str]] | None = None, name: str = "") -> Any:
    """A map dump in a backend-independent order (sorted by raw key).

    `ignore` lists field paths inside the formatted value (["last_seen"], ["stats", "when"],
    ["res", "12"] for element 12 of an array; a global variable of `.bss` etc. is named
    directly) that legitimately differ between backends -- clock readings, random numbers;
    when given, the raw value bytes are dropped and only the formatted value, minus those
    fields, is compared ([RAW] drops the raw key bytes too)."""
    if not isinstance(entries, list):
        return entries
    if ignore:
        entries = [_without(e, ignore, name) for e in entries]
    return sorted(entries, key=_entry_key)


def _without(entry: Any, ignore: list[list[str]], name: str) -> Any:
    if not isinstance(entry, dict) or "formatted" not in entry:
        return entry
    drop = ("value", "values", "key") if [RAW] in ignore else ("value", "values")
    out = {k: v for k, v in entry.items() if k not in drop}
    formatted = json.loads(json.dumps(entry["formatted"]))
    for path in ignore:
        for value in _values_of(formatted, name):
            _drop(value, path)
    out["formatted"] = formatted
    return out


def _values_of(formatted: dict[str, Any], name: str) -> list[Any]:
    if "values" in formatted:      # per-CPU maps
        values = [v.get("value") for v in formatted["values"]]
    else:
        values = [formatted.get("value")]
    out: list[Any] = []
    for v in values:
        # global data: {".bss": [{var: value}, ...]} -- fields are named by variable
        if isinstance(v, dict) and list(v) == [name] and isinstance(v[name], list):
            out.extend(v[name])
        else:
            out.append(v)
    return out


def _drop(value: Any, path: list[str]) -> None:
    for part in path[:-1]:
        value = _child(value, part)
        if value is None:
            return
    last = path[-1]
    if isinstance(value, dict):
        value.pop(last, None)
    elif isinstance(value, list) and last.isdigit() and int(last) < len(value):
        value[int(last)] = "<ignored>"


def _child(value: Any, part: str) -> Any:
    if isinstance(value, dict):
        return value.get(part)
    if isinstance(value, list) and part.isdigit() and int(part) < len(value):
        return value[int(part)]
    return None


def parse_ignores(patterns: list[str] | tuple[str, ...]) -> dict[str, list[list[str]]]:
    """`MAP.FIELD[.SUB...]` patterns -> {map: [[FIELD, SUB, ...], ...]}; a map whose name
    starts with a dot (`.bss.res.3`) keeps it; a bare run field (`retval`) -> {"@retval": []}."""
    out: dict[str, list[list[str]]] = {}
    for pat in patterns:
        if pat in RUN_FIELDS:
            out["@" + pat] = []
            continue
        lead = "." if pat.startswith(".") else ""
        mapname, _, rest = pat[len(lead):].partition(".")
        mapname = lead + mapname
        if not mapname.strip(".") or not rest:
            from bpfsim.errors import UsageError

            raise UsageError(f"--ignore {pat!r}: expected MAP.FIELD (e.g. flows.last_seen), "
                             f"MAP.@raw or one of {', '.join(RUN_FIELDS)}")
        out.setdefault(mapname, []).append(rest.split("."))
    return out


def compare_observations(step: str, sim: dict[str, Any], kernel: dict[str, Any],
                         ignore: dict[str, list[list[str]]] | None = None) -> list[Difference]:
    diffs: list[Difference] = []
    ignore = ignore or {}
    for what in sorted(set(sim) | set(kernel)):
        if "@" + what in ignore:
            continue
        a, b = sim.get(what), kernel.get(what)
        if what == "maps" and isinstance(a, dict) and isinstance(b, dict):
            for name in sorted(set(a) | set(b)):
                ign = ignore.get(name)
                da = normalise_dump(a.get(name), ign, name)
                db = normalise_dump(b.get(name), ign, name)
                if da != db:
                    diffs.append(Difference(step, f"maps.{name}", da, db))
            continue
        if a != b:
            diffs.append(Difference(step, what, a, b))
    return diffs


def run_diff(spec: Any, scenario: Scenario, *, sim: Backend | None = None,
             kernel: Backend | None = None, ignore: tuple[str, ...] = ()) -> list[Difference]:
    """Drive `scenario` through both backends (the emulator first) and compare every step."""
    return run_diff_steps(spec, scenario, sim=sim, kernel=kernel, ignore=ignore)[0]


def run_diff_steps(spec: Any, scenario: Scenario, *, sim: Backend | None = None,
                   kernel: Backend | None = None, ignore: tuple[str, ...] = ()
                   ) -> tuple[list[Difference], list[dict[str, Any]]]:
    """As run_diff, and also every step's observations: [{"step", "sim", "kernel"}, ...]."""
    sim_b = sim if sim is not None else SimBackend()
    ker_b = kernel if kernel is not None else KernelBackend()
    sim_obs = _drive(sim_b, spec, scenario)
    ker_obs = _drive(ker_b, spec, scenario)
    ignores = parse_ignores(ignore)
    diffs: list[Difference] = []
    steps: list[dict[str, Any]] = []
    for (label, a), (_label, b) in zip(sim_obs, ker_obs):
        diffs.extend(compare_observations(label, a, b, ignores))
        steps.append({"step": label, "sim": a, "kernel": b})
    return diffs, steps


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
    return Scenario([Step("run", args), Step("advance", {"ns": advance or 0})], Path("."))


def explain(d: Difference) -> list[str]:
    """Readable lines for one difference: per entry for maps (only the entries that differ,
    shown through BTF), per line for traces, the two values otherwise."""
    if d.what.startswith("maps.") and isinstance(d.sim, list) and isinstance(d.kernel, list):
        return _explain_map(d.sim, d.kernel)
    if d.what == "trace" and isinstance(d.sim, list) and isinstance(d.kernel, list):
        out = []
        for i in range(max(len(d.sim), len(d.kernel))):
            a = d.sim[i] if i < len(d.sim) else "(none)"
            b = d.kernel[i] if i < len(d.kernel) else "(none)"
            if a != b:
                out += [f"line {i + 1}:", f"  sim    : {a}", f"  kernel : {b}"]
        return out
    return [f"sim    : {_show(d.sim)}", f"kernel : {_show(d.kernel)}"]


def _show(v: Any) -> str:
    return json.dumps(v, default=str)


def _key_and_value(entry: Any) -> tuple[str, Any]:
    if isinstance(entry, dict):
        f = entry.get("formatted")
        if isinstance(f, dict) and "key" in f:
            return _show(f["key"]), f.get("value", f.get("values"))
        return _show(entry.get("key")), entry.get("value", entry.get("values"))
    return _show(entry), None


def _explain_map(sim: list[Any], kernel: list[Any]) -> list[str]:
    a = dict(_key_and_value(e) for e in sim)
    b = dict(_key_and_value(e) for e in kernel)
    out = []
    for key in sorted(set(a) | set(b)):
        if key not in b:
            out.append(f"key {key}: only in sim    : {_show(a[key])}")
        elif key not in a:
            out.append(f"key {key}: only in kernel : {_show(b[key])}")
        elif a[key] != b[key]:
            out += [f"key {key}:", f"  sim    : {_show(a[key])}", f"  kernel : {_show(b[key])}"]
    return out or [f"sim    : {_show(sim)}", f"kernel : {_show(kernel)}"]
