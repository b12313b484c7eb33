"""Feature probes against this machine's kernel."""

from __future__ import annotations

import pytest

from bpfsim.errors import NotSupported
from bpfsim.kernel import probes
from bpfsim.uapi.constants import MapType, ProgType


def test_kernel_available_gives_a_reason():
    ok, reason = probes.kernel_available()
    assert isinstance(ok, bool) and (ok or reason)


def test_release_parsing():
    assert probes.kernel_release() >= (0, 0)


@pytest.mark.kernel
def test_common_map_and_prog_types_are_supported():
    for t in (MapType.HASH, MapType.ARRAY, MapType.LRU_HASH, MapType.PERCPU_ARRAY, MapType.RINGBUF,
              MapType.ARRAY_OF_MAPS, MapType.QUEUE, MapType.LPM_TRIE, MapType.STACK_TRACE):
        assert probes.probe_map_type(t), t.name
    for p in (ProgType.XDP, ProgType.SCHED_CLS, ProgType.SOCKET_FILTER, ProgType.TRACING):
        assert probes.probe_prog_type(p), p.name


@pytest.mark.kernel
def test_unknown_types_raise_not_supported():
    assert not probes.probe_map_type(200)
    assert not probes.probe_prog_type(200)
    with pytest.raises(NotSupported, match="not supported"):
        probes.require_map_type(200)
    with pytest.raises(NotSupported):
        probes.require_prog_type(200)


@pytest.mark.kernel
def test_helper_probe():
    assert probes.probe_helper(ProgType.XDP, 1)          # bpf_map_lookup_elem
    assert not probes.probe_helper(ProgType.XDP, 100000)
    with pytest.raises(NotSupported, match="nope"):
        probes.require_helper(ProgType.XDP, 100000, "nope")


def test_feature_by_release_and_by_probe(monkeypatch):
    monkeypatch.setattr(probes, "kernel_release", lambda: (5, 16))
    assert probes.probe_feature("bpf_timer")
    assert not probes.probe_feature("bpf_loop")
    with pytest.raises(NotSupported, match="5.17"):
        probes.require_feature("bpf_loop")
    monkeypatch.setattr(probes, "probe_timer_flag", lambda flags: flags != 2)
    with pytest.raises(NotSupported, match="6.7"):
        probes.require_feature("BPF_F_TIMER_CPU_PIN")
    with pytest.raises(NotSupported):
        probes.probe_feature("no such thing")


@pytest.mark.kernel
def test_timer_flags_are_probed_by_running_a_program():
    assert probes.probe_timer_flag(0)
    assert probes.probe_feature("BPF_F_TIMER_ABS")
    assert probes.probe_feature("BPF_F_TIMER_CPU_PIN")       # 6.7+, this machine is 6.18
    assert not probes.probe_timer_flag(1 << 2)                # unknown flag: -EINVAL
    probes.require_feature("BPF_F_TIMER_CPU_PIN")
