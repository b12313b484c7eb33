"""The pytest plugin, exercised in a child pytest run: markers, backend parametrisation, pins."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest


def _run(tmp_path, body: str, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_child.py").write_text(textwrap.dedent(body))
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                           str(tmp_path), *args], capture_output=True, text=True, cwd=tmp_path,
                          timeout=120)


def test_kernel_marker_skips_with_the_probe_reason(tmp_path):
    (tmp_path / "conftest.py").write_text(textwrap.dedent("""
        import bpfsim.kernel.probes as p
        p.kernel_available = lambda: (False, "no bpf here (test)")
    """))
    r = _run(tmp_path, """
        import pytest

        @pytest.mark.kernel
        def test_needs_kernel():
            raise AssertionError("must not run")
    """)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "kernel backend unavailable: no bpf here (test)" in r.stdout
    assert "1 skipped" in r.stdout


def test_backend_fixture_has_both_params_and_the_kernel_one_is_marked(tmp_path):
    r = _run(tmp_path, """
        def test_b(backend, request):
            marked = request.node.get_closest_marker("kernel") is not None
            assert marked == (backend.name == "kernel")
    """, "--collect-only")
    assert "test_b[sim]" in r.stdout and "test_b[kernel]" in r.stdout


@pytest.mark.kernel
def test_kernel_backend_loads_pins_and_cleans_up(tmp_path):
    obj = os.path.join(os.path.dirname(__file__), "..", "..", "bench", "objects", "hash_map.bpf.o")
    r = _run(tmp_path, f"""
        import os
        import pytest

        SEEN = []

        @pytest.mark.kernel
        def test_k(kernel_backend, bpf_pin_dir, bpf_pin_root):
            assert bpf_pin_dir.startswith(bpf_pin_root + "/") and os.path.isdir(bpf_pin_dir)
            coll = kernel_backend({os.path.abspath(obj)!r})
            coll.maps["bench_hmap"][1] = 2
            coll.maps["bench_hmap"].pin(kernel_backend.path("m"))
            h = kernel_backend.get_pinned(kernel_backend.path("m"))
            assert h[1] == 2
            kernel_backend.sleep(1000)
            SEEN.append(bpf_pin_root)

        def test_after():
            assert SEEN and os.path.isdir(SEEN[0]) and os.listdir(SEEN[0]) == []
    """)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 passed" in r.stdout
    assert not [d for d in os.listdir("/sys/fs/bpf") if d.startswith("bpfsim-test-")
                and not os.path.exists(f"/proc/{d.rsplit('-', 1)[1]}")]
