"""`bpfsim diff`: the emulator checked against the running kernel, step by step.

Public API only (bpfsim.Runtime, bpfsim.kernel).  See `compare.run_diff`.
"""

from bpfsim.diff.backends import Backend, KernelBackend, SimBackend, trace_message
from bpfsim.diff.compare import Difference, default_scenario, explain, run_diff, run_diff_steps
from bpfsim.diff.scenario import Scenario, Step, load_scenario, parse_scenario

__all__ = ["Backend", "Difference", "KernelBackend", "Scenario", "SimBackend", "Step",
           "default_scenario", "explain", "load_scenario", "parse_scenario", "run_diff", "run_diff_steps",
           "trace_message"]
