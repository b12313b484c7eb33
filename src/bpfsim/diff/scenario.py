"""Scenarios: a sequence of steps (runs, map writes, advances, pins, closes) that one diff drives
through both backends, recording what each step observed.

A scenario file is YAML or JSON:

    steps:
      - run: {prog: egress, data: pkt.bin}        # data: a file (relative to the scenario) or hex:...
      - advance: 50ms
      - map_update: {map: counts, key: 1, value: 7}
      - map_delete: {map: counts, key: 1}
      - pin_prog: {prog: egress, path: prog}       # paths are relative to a per-run bpffs dir
      - pin_map: {map: tmap, path: tmap}
      - close: {map: tmap}                          # or `close: collection`
      - run_pinned: {path: prog, data: pkt.bin}     # get_pinned + test_run + close
      - unpin: prog
      - dump: maps

Without a scenario, `bpfsim diff OBJ` is the scenario [run, advance DURATION (default 0)].

A run step observes the return value, output data and ctx; maps and trace lines are observed by
`advance` and `dump` steps.  Why: on the kernel, time passes between any two steps, so a 0 ns
timer armed by a run has fired before the next look at the maps; on the virtual clock it fires
at the next advance — `advance: 0` is the comparable point.
Job: parse and execute scenarios; comparing observations is `diff.compare`'s job.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bpfsim.diff.backends import Backend
from bpfsim.errors import BpfError, KeyNotFound, UsageError, VerifierError
from bpfsim.uapi import MapType
from bpfsim.units import parse_duration

# Maps whose values are object ids (programs, inner maps): ids are each kernel's own numbering,
# so a diff compares which slots are filled, not the numbers.
ID_VALUED_MAPS = frozenset({MapType.PROG_ARRAY, MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS})


def _without_ids(entry: Any) -> Any:
    if not isinstance(entry, dict):
        return entry
    out = dict(entry)
    for k in ("value", "formatted"):
        out.pop(k, None)
    out["value"] = "<object id>"
    return out


STEP_KINDS = ("run", "advance", "map_update", "map_delete", "map_lookup", "pin_prog", "pin_map",
              "close", "run_pinned", "unpin", "dump")


@dataclass
class Step:
    kind: str
    args: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        if not self.args:
            return self.kind
        inner = ", ".join(f"{k}={v}" for k, v in self.args.items() if k not in ("data_bytes", "ctx_bytes"))
        return f"{self.kind}({inner})"


@dataclass
class Scenario:
    steps: list[Step]
    base_dir: Path = Path(".")


def load_scenario(path: str | Path) -> Scenario:
    """Parse a YAML or JSON scenario file; UsageError on anything malformed."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"scenario {path}: no such file")
    try:
        text = p.read_text()        # inside: a file that is not UTF-8 is bad input too
        if p.suffix == ".json":
            doc = json.loads(text)
        else:
            import yaml

            doc = yaml.safe_load(text)
    except Exception as exc:  # noqa: BLE001 - any parser error is bad input
        raise UsageError(f"scenario {path}: cannot parse: {exc}") from None
    return parse_scenario(doc, base_dir=p.parent)


def parse_scenario(doc: Any, base_dir: Path = Path(".")) -> Scenario:
    steps_doc = doc.get("steps") if isinstance(doc, dict) else doc
    if not isinstance(steps_doc, list) or not steps_doc:
        raise UsageError("scenario: expected a non-empty list of steps (under 'steps:')")
    steps: list[Step] = []
    for i, raw in enumerate(steps_doc):
        if isinstance(raw, str):
            raw = {raw: {}}
        if not isinstance(raw, dict) or len(raw) != 1:
            raise UsageError(f"scenario step {i + 1}: expected one 'kind: arguments' mapping")
        ((kind, args),) = raw.items()
        if kind not in STEP_KINDS:
            raise UsageError(f"scenario step {i + 1}: unknown step {kind!r} "
                             f"(known: {', '.join(STEP_KINDS)})")
        if kind == "advance":
            args = {"ns": parse_duration(str(args))}
        elif kind in ("unpin", "dump"):
            args = {"path": args} if kind == "unpin" else {}
        elif kind == "close" and args in ("collection", None, {}):
            args = {}
        elif not isinstance(args, dict):
            raise UsageError(f"scenario step {i + 1}: {kind} takes a mapping of arguments")
        steps.append(Step(kind, dict(args)))
    return Scenario(steps, base_dir)


def _input_bytes(value: Any, base_dir: Path) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, str) and value.startswith("hex:"):
        try:
            return bytes.fromhex(value[4:])
        except ValueError:
            raise UsageError(f"bad hex input {value!r}") from None
    p = (base_dir / str(value))
    if not p.is_file():
        raise UsageError(f"input file {value}: no such file")
    return p.read_bytes()


class Driver:
    """Executes a scenario on one backend and records one observation per step."""

    def __init__(self, backend: Backend, spec: Any, base_dir: Path = Path(".")) -> None:
        self.b = backend
        self.spec = spec
        self.base_dir = base_dir
        self.coll: Any = None
        self.closed_maps: set[str] = set()
        self.pins: list[str] = []

    def _path(self, rel: str) -> str:
        return f"{self.b.pin_root}/{rel}"

    def start(self) -> dict[str, Any]:
        """Load the collection: the first observation is the verifier verdict."""
        try:
            self.coll = self.b.load(self.spec)
        except VerifierError as exc:
            return {"verdict": "rejected", "error": exc.message, "errno": exc.errno}
        return {"verdict": "accepted"}

    def step(self, step: Step) -> dict[str, Any]:
        try:
            return getattr(self, f"_do_{step.kind}")(**step.args)
        except (UsageError, KeyNotFound) as exc:
            # a mistake in the scenario (a program or map that does not exist), not an
            # observation: report it instead of recording the same error on both sides
            raise UsageError(f"scenario step {step.describe()}: {exc}") from None
        except BpfError as exc:
            return {"error": type(exc).__name__, "errno": getattr(exc, "errno", None)}

    def maps_snapshot(self) -> dict[str, Any]:
        if self.coll is None:
            return {}
        out = {}
        for name, m in self.coll.maps.items():
            if name in self.closed_maps:
                continue
            dump = m.dump()
            ms = self.spec.maps.get(name)
            if ms is not None and ms.type in ID_VALUED_MAPS:
                dump = [_without_ids(e) for e in dump]
            out[name] = dump
        return out

    # -- steps -------------------------------------------------------------------------------
    def _run_on(self, prog: Any, data: Any = None, ctx: Any = None, repeat: int = 1) -> dict[str, Any]:
        r = prog.test_run(data=_input_bytes(data, self.base_dir), ctx=_input_bytes(ctx, self.base_dir),
                          repeat=int(repeat))
        return {"retval": r.retval, "data_out": (r.data or b"").hex(),
                "ctx_out": r.ctx.hex() if r.ctx else None}

    def _do_run(self, prog: str | None = None, data: Any = None, ctx: Any = None,
                repeat: int = 1) -> dict[str, Any]:
        return self._run_on(self._prog(prog or next(iter(self.coll.programs))), data, ctx, repeat)

    def _do_run_pinned(self, path: str, data: Any = None, ctx: Any = None,
                       repeat: int = 1) -> dict[str, Any]:
        prog = self.b.get_pinned(self._path(path))
        try:
            return self._run_on(prog, data, ctx, repeat)
        finally:
            prog.close()

    def _do_advance(self, ns: int) -> dict[str, Any]:
        self.b.advance(ns)
        return {"trace": self.b.trace(), "maps": self.maps_snapshot()}

    def _prog(self, name: str) -> Any:
        if name not in self.coll.programs:
            raise UsageError(f"scenario: no program named {name!r}")
        return self.coll.programs[name]

    def _map(self, name: str) -> Any:
        if name not in self.coll.maps:
            raise UsageError(f"scenario: no map named {name!r}")
        return self.coll.maps[name]

    def _do_map_update(self, map: str, key: Any, value: Any, flags: int = 0) -> dict[str, Any]:
        self._map(map).update(key, value, flags=flags)
        return {"maps": self.maps_snapshot()}

    def _do_map_delete(self, map: str, key: Any) -> dict[str, Any]:
        try:
            del self._map(map)[key]
            return {"deleted": True}
        except KeyError:
            return {"deleted": False}

    def _do_map_lookup(self, map: str, key: Any) -> dict[str, Any]:
        try:
            return {"value": self._map(map)[key]}
        except KeyError:
            return {"value": None}

    def _do_pin_prog(self, prog: str, path: str) -> dict[str, Any]:
        self._prog(prog).pin(self._path(path))
        self.pins.append(self._path(path))
        return {}

    def _do_pin_map(self, map: str, path: str) -> dict[str, Any]:
        self._map(map).pin(self._path(path))
        self.pins.append(self._path(path))
        return {}

    def _do_close(self, map: str | None = None) -> dict[str, Any]:
        if map is None:
            self.coll.close()
            self.closed_maps.update(self.coll.maps)
        else:
            self._map(map).close()
            self.closed_maps.add(map)
        return {}

    def _do_unpin(self, path: str) -> dict[str, Any]:
        self.b.unpin(self._path(path))
        if self._path(path) in self.pins:
            self.pins.remove(self._path(path))
        return {}

    def _do_dump(self) -> dict[str, Any]:
        return {"trace": self.b.trace(), "maps": self.maps_snapshot()}

    def finish(self) -> None:
        """Remove pins this scenario left and close everything (tests clean up after themselves)."""
        for path in list(self.pins):
            with contextlib.suppress(BpfError):
                self.b.unpin(path)
        if self.coll is not None:
            with contextlib.suppress(BpfError):
                self.coll.close()
        self.b.close()
