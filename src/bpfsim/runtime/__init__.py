"""The emulated kernel: Runtime, maps, helpers, clocks, timers, pins, trace pipe, contexts.

Public names are re-exported by `bpfsim` itself; import submodules directly inside the package.
Must not import `kernel` (the real one).
"""
