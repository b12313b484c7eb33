"""One test body, two backends: the `backend` fixture on the emulator and on the real kernel."""

from __future__ import annotations

from pathlib import Path

import pytest

from bpfsim import ms
from bpfsim.errors import KeyNotFound, PinError

ROOT = Path(__file__).resolve().parents[2]
PKT64 = (ROOT / "bench" / "pkt_64.bin").read_bytes()


@pytest.mark.parametrize("name, expected", [("parse_packet", 2176149347), ("fnv_packet", 481572483),
                                            ("hash_map", 4108211712), ("empty", 0)])
def test_bench_values(backend, name, expected):
    coll = backend(ROOT / "bench" / "objects" / f"{name}.bpf.o")
    r = coll.programs[f"{name}_xdp"].test_run(data=PKT64)
    assert r.retval == expected and r.data == PKT64


def test_map_roundtrip_and_dump(backend):
    coll = backend(ROOT / "bench" / "objects" / "hash_map.bpf.o")
    m = coll.maps["bench_hmap"]
    m[1] = 10
    m.raw[(2).to_bytes(4, "little")] = (20).to_bytes(8, "little")
    assert dict(m.items()) == {1: 10, 2: 20}
    del m[1]
    with pytest.raises(KeyNotFound):
        m[1]
    assert m.dump() == [{"key": ["0x02", "0x00", "0x00", "0x00"],
                         "value": ["0x14"] + ["0x00"] * 7,
                         "formatted": {"key": 2, "value": 20}}]


def test_pin_get_pinned_unpin(backend):
    coll = backend(ROOT / "bench" / "objects" / "hash_map.bpf.o")
    coll.maps["bench_hmap"][7] = 70
    path = backend.path("hmap")
    coll.maps["bench_hmap"].pin(path)
    coll.close()
    again = backend.get_pinned(path)
    assert again[7] == 70
    backend.unpin(path)
    with pytest.raises(PinError):
        backend.get_pinned(path)


def test_timer_callback_fires_after_time_passes(backend, bpf_timer_sleep):
    coll = backend(ROOT / "examples" / "timer" / "timer_nocancel.bpf.o")
    r = coll.programs["bpf_prog1"].test_run(data=PKT64[14:])   # cgroup_skb: an IPv4 packet
    assert r.retval == 0
    bpf_timer_sleep(ms(10))
    assert coll.maps["hmap"][0]["counter"] == 1
    assert any(line.endswith("timer_cb: key 0 fired 1 time(s)") for line in backend.trace_pipe)
