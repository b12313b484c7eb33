"""Our CollectionSpec against what libbpf makes of the same object on the running kernel:
`bpftool prog loadall OBJ DIR pinmaps DIR` (libbpf opens, links and loads everything), then
the pinned maps' names, types, sizes and flags and the programs' types must match the spec.
Instruction counts are compared where the kernel rewrites nothing (no ctx access rewriting,
no helper inlining): there the xlated length equals our linked length."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from bpfsim.spec import load_spec
from bpfsim.uapi.constants import BPF_F_MMAPABLE, MapType, ProgType

ROOT = Path(__file__).resolve().parents[2]
PROGS = ROOT / "tests" / "fixtures" / "progs"
OBJECTS = [PROGS / "globals.bpf.o", PROGS / "callbacks.bpf.o", PROGS / "map_in_map.bpf.o",
           PROGS / "kconfig.bpf.o",
           *sorted((ROOT / "examples").glob("*/*.bpf.o")),
           *sorted((ROOT / "bench" / "objects").glob("*.bpf.o"))]
# programs whose xlated image is exactly our linked image (checked by hand with
# `bpftool prog dump xlated`): no ctx field rewrites, no inlined helpers
SAME_LENGTH = {"sock_two", "tail_a", "tail_b", "empty_xdp", "loop_arith_xdp"}

pytestmark = pytest.mark.kernel


def _kernel_ok() -> str | None:
    try:
        from bpfsim.kernel.probes import kernel_available  # type: ignore[import-not-found]

        if not kernel_available():
            return "bpf(2) unavailable"
    except ImportError:
        if not (os.geteuid() == 0 and os.path.exists("/sys/fs/bpf")):
            return "needs root and bpffs"
    if shutil.which("bpftool") is None:
        return "bpftool not installed"
    return None


def _bpftool(*args: str) -> object:
    out = subprocess.run(["bpftool", "-j", *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


@pytest.fixture
def pin_dir():
    reason = _kernel_ok()
    if reason:
        pytest.skip(reason)
    d = Path("/sys/fs/bpf") / f"bpfsim_spec_{uuid.uuid4().hex[:8]}"
    d.mkdir()
    yield d
    subprocess.run(["rm", "-rf", str(d)], check=False)


def _kernel_maps(spec, pin_dir: Path) -> dict[str, dict]:
    """Kernel map infos by name.  Without LIBBPF_PIN_BY_NAME maps, `pinmaps` pins every map;
    with them (libbpf refuses a second pin path), the maps the programs hold are read by id
    and the by-name pins from /sys/fs/bpf."""
    if not any(m.pinning for m in spec.maps.values()):
        names = [m.kernel_name for m in spec.maps.values()]
        # libbpf's pin path turns "." into "_" (libbpf.c: bpf_object__pin_maps)
        return {n: _bpftool("map", "show", "pinned", str(pin_dir / "maps" / n.replace(".", "_")))
                for n in names}
    out = {}
    for name in spec.programs:
        info = _bpftool("prog", "show", "pinned", str(pin_dir / "progs" / name))
        for mid in info.get("map_ids", []):
            m = _bpftool("map", "show", "id", str(mid))
            out[m["name"]] = m
    for m in spec.maps.values():
        if m.pinning:
            out[m.kernel_name] = _bpftool("map", "show", "pinned", f"/sys/fs/bpf/{m.name}")
    return out


@pytest.mark.parametrize("obj", OBJECTS, ids=lambda p: p.name)
def test_spec_matches_libbpf(obj: Path, pin_dir: Path) -> None:
    spec = load_spec(obj)
    by_name_pins = [Path("/sys/fs/bpf") / m.name for m in spec.maps.values() if m.pinning]
    for p in by_name_pins:
        if p.exists():
            pytest.skip(f"{p} already pinned by someone else")
    cmd = ["bpftool", "prog", "loadall", str(obj), str(pin_dir / "progs")]
    if not by_name_pins:
        cmd += ["pinmaps", str(pin_dir / "maps")]
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        kmaps = _kernel_maps(spec, pin_dir)
        assert len(kmaps) >= (len(spec.maps) if not by_name_pins else 1)
        for name, m in spec.maps.items():
            info = kmaps.get(m.kernel_name)
            if info is None:
                continue      # held by no program and not pinned: freed when bpftool exits
            assert info["name"] == m.kernel_name, name
            assert info["type"] == MapType(m.type).name.lower(), name
            assert (info["bytes_key"], info["bytes_value"], info["max_entries"]) == \
                   (m.key_size, m.value_size, m.max_entries), name
            # bpftool 7.1 links libbpf 1.1, which makes every global-data map mmapable;
            # libbpf >= 1.2 (and our spec) only when the section has a non-static variable
            # (libbpf.c: map_is_mmapable).
            assert info.get("flags", 0) & ~BPF_F_MMAPABLE == m.flags & ~BPF_F_MMAPABLE, name
            if not m.is_global_data:
                assert info.get("flags", 0) == m.flags, name
        for name, p in spec.programs.items():
            info = _bpftool("prog", "show", "pinned", str(pin_dir / "progs" / name))
            assert info["type"] == ProgType(p.type).name.lower(), name
            if name in SAME_LENGTH:
                assert info["bytes_xlated"] // 8 == len(p.instructions), name
            # the kernel keeps libbpf's subprogram order: compare the function headers of the
            # xlated dump with our depth-first append order
            xl = _bpftool("prog", "dump", "xlated", "pinned", str(pin_dir / "progs" / name))
            kernel_funcs = [x["proto"].split("(")[0].split()[-1].lstrip("*")
                            for x in xl if "proto" in x]
            ours = [n for n, _ in sorted(p.subprogram_starts.items(), key=lambda kv: kv[1])]
            assert kernel_funcs == ours, name
    finally:
        for p in by_name_pins:
            p.unlink(missing_ok=True)
