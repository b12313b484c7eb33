"""`bpfsim bench`: time the bundled benchmark programs on the emulator and on the kernel, in one
run, and report the ratio.

Benchmarks are a command, not tests: tests check behaviour; this reports numbers measured side
by side on the same machine at the same time.  Each program's return value is checked against
the kernel's documented result (bench/README.md) so a fast wrong answer cannot pass unnoticed.
"""

from __future__ import annotations

import struct
import time
from pathlib import Path
from typing import Any

import click

import bpfsim
import bpfsim.kernel
from bpfsim.cli.main import exit_with
from bpfsim.cli.options import emit_json

# name -> expected retval on each packet (bench/README.md, measured on Linux 6.18)
EXPECTED = {
    "empty": {"pkt_64": 0, "pkt_1500": 0},
    "parse_packet": {"pkt_64": 2176149347, "pkt_1500": 2176149347},
    "fnv_packet": {"pkt_64": 481572483, "pkt_1500": 2942214908},
    "loop_arith": {"pkt_64": 200082162, "pkt_1500": 200082162},
    "hash_map": {"pkt_64": 4108211712, "pkt_1500": 4108211712},
}


def default_bench_dir() -> Path:
    """bench/ of a source checkout (the benchmark objects are not part of the wheel)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "bench" / "pkt_64.bin").exists():
            return parent / "bench"
    return Path("bench")


@click.command("bench")
@click.option("--dir", "bench_dir", type=click.Path(file_okay=False), default=None,
              help="Directory with the benchmark objects and packets (default: ./bench).")
@click.option("--only", multiple=True, help="Run only these programs (repeatable).")
@click.option("--runs", type=click.IntRange(1, 100_000), default=5, show_default=True,
              help="test_run repeats on the emulator (the kernel does 1000x as many).")
@click.option("--backend", type=click.Choice(["both", "sim", "kernel"]), default="both", show_default=True)
@click.option("--timers", type=click.IntRange(0, 10_000), default=0, metavar="N",
              help="Instead: fire N one-shot 10 ms timers on the emulator's real clock and on the "
                   "kernel, and report how late they fire.")
@click.option("--json", "as_json", is_flag=True)
def command(bench_dir: str | None, only: tuple[str, ...], runs: int, backend: str, timers: int,
            as_json: bool) -> None:
    """Time the benchmark programs on the emulator and the kernel; print ns/run and the ratio."""
    base = Path(bench_dir) if bench_dir else default_bench_dir()
    if timers:
        _bench_timers(base, timers, backend, as_json)
        return
    objects = _find_objects(base)
    if not objects:
        raise click.UsageError(f"no benchmark objects under {base} (expected NAME.bpf.o)")
    unknown = sorted(set(only) - set(objects))
    if unknown:
        raise click.BadParameter(f"no benchmark named {', '.join(unknown)} under {base} "
                                 f"(benchmarks: {', '.join(objects)})", param_hint="--only")
    packets = {pkt: base / f"{pkt}.bin" for pkt in ("pkt_64", "pkt_1500")}
    missing = [str(p) for p in packets.values() if not p.is_file()]
    if missing:
        raise click.UsageError(f"missing benchmark packet {', '.join(missing)} "
                               "(bench/gen_packets.py writes them)")
    rows = []
    for name, obj in objects.items():
        if only and name not in only:
            continue
        for pkt, pkt_path in packets.items():
            data = pkt_path.read_bytes()
            row: dict[str, Any] = {"program": name, "packet": pkt,
                                   "expected": EXPECTED.get(name, {}).get(pkt)}
            if backend in ("both", "sim"):
                row["sim_ns"], row["sim_retval"], row["insns"] = _time_sim(obj, data, runs)
            if backend in ("both", "kernel"):
                try:
                    row["kernel_ns"], row["kernel_retval"] = _time_kernel(obj, data, runs * 1000)
                except bpfsim.BpfError as exc:
                    if backend == "kernel":
                        raise
                    # --backend both without a usable kernel: one note, then the emulator only
                    click.echo(f"bpfsim bench: kernel backend unavailable ({exc}); "
                               "timing the emulator only", err=True)
                    backend = "sim"
            if row.get("sim_ns") and row.get("kernel_ns"):
                row["ratio"] = row["sim_ns"] / max(row["kernel_ns"], 1)
            rows.append(row)
    for r in rows:
        r["ok"] = all(r.get(k) in (None, r["expected"]) for k in ("sim_retval", "kernel_retval"))
    if as_json:
        emit_json({"results": rows})
    else:
        _print_table(rows)
    if not all(r["ok"] for r in rows):   # a fast wrong answer is a failed check: exit 1
        exit_with(1)


def _print_table(rows: list[dict[str, Any]]) -> None:
    click.echo(f"{'program':<14}{'packet':<10}{'insns':>9}{'sim ns/run':>14}{'kernel ns/run':>15}"
               f"{'ratio':>10}  check")
    for r in rows:
        click.echo(f"{r['program']:<14}{r['packet']:<10}{'' if r.get('insns') is None else r['insns']:>9}"
                   f"{_fmt(r.get('sim_ns')):>14}{_fmt(r.get('kernel_ns')):>15}"
                   f"{(format(r['ratio'], ',.0f') + 'x') if 'ratio' in r else '':>10}  "
                   f"{'ok' if r['ok'] else 'WRONG RESULT'}")


def _fmt(v: Any) -> str:
    return "" if v is None else f"{v:,.0f}"


def _find_objects(base: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for sub in (base / "objects", base / "build", base):
        for p in sorted(sub.glob("*.bpf.o")) if sub.is_dir() else []:
            found.setdefault(p.name[: -len(".bpf.o")], p)
    return found


def _time_sim(obj: Path, data: bytes, runs: int) -> tuple[float, int, int | None]:
    with bpfsim.load(obj) as coll:
        prog = next(iter(coll.programs.values()))
        prog.test_run(data=data)  # warm-up: engine binding, caches
        start = time.perf_counter_ns()
        result = prog.test_run(data=data, repeat=runs)
        elapsed = time.perf_counter_ns() - start
    return elapsed / runs, result.retval, getattr(result, "insns", None)


def _time_kernel(obj: Path, data: bytes, runs: int) -> tuple[float, int]:
    with bpfsim.kernel.load(obj) as coll:
        prog = next(iter(coll.programs.values()))
        result = prog.test_run(data=data, repeat=runs)
    return float(result.duration_ns), result.retval


TIMER_NSECS = 10_000_000


def _bench_timers(base: Path, count: int, backend: str, as_json: bool) -> None:
    """Lateness of one-shot 10 ms timers: both time stamps are taken inside BPF (at
    bpf_timer_start and in the callback), so user-space polling does not enter the figure."""
    obj = base / "timer" / "timer_latency.bpf.o"
    if not obj.is_file():
        raise click.UsageError(f"{obj}: no such file")
    results: dict[str, Any] = {}
    if backend in ("both", "sim"):
        with bpfsim.Runtime(clock="real") as rt:
            results["sim"] = _lateness(rt.load(obj), count)
    if backend in ("both", "kernel"):
        try:
            with bpfsim.kernel.load(obj) as coll:
                results["kernel"] = _lateness(coll, count)
        except bpfsim.BpfError as exc:
            click.echo(f"kernel: {exc}", err=True)
    if as_json:
        emit_json({"timer_ns": TIMER_NSECS, "count": count, "lateness_ns": results})
        return
    click.echo(f"lateness of {count} one-shot {TIMER_NSECS // 1_000_000} ms timers (us)")
    click.echo(f"{'backend':<10}{'mean':>10}{'p50':>10}{'p99':>10}{'max':>10}")
    for name, late in results.items():
        ordered = sorted(late)
        click.echo(f"{name:<10}{sum(late) / len(late) / 1e3:>10.0f}{_pct(ordered, 0.5):>10.0f}"
                   f"{_pct(ordered, 0.99):>10.0f}{ordered[-1] / 1e3:>10.0f}")


def _pct(ordered: list[int], q: float) -> float:
    """The q-quantile of sorted nanoseconds, in microseconds."""
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e3


def _lateness(coll: Any, count: int) -> list[int]:
    prog, slots = coll.programs["arm"], coll.maps["slots"]
    late = []
    for _ in range(count):
        r = prog.test_run(ctx=struct.pack("<Q", TIMER_NSECS))
        if r.retval:
            raise click.ClickException(f"arm returned {r.retval}")
        deadline = time.monotonic() + 1.0
        while True:
            v = slots[0]
            if v["fired_at"]:
                break
            if time.monotonic() > deadline:
                raise click.ClickException("a 10 ms timer did not fire within 1 s")
            time.sleep(0.001)
        late.append(v["fired_at"] - v["armed_at"] - v["nsecs"])
    coll.close()
    return late
