"""bpfsim: a pure-Python eBPF runtime with Linux's semantics (see docs/architecture.md).

The public API lives here; keep this module small and import heavy layers lazily.
"""

from bpfsim.spec.reader import load_spec

__all__ = ["load_spec"]
