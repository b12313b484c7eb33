"""The VM: the memory model (`memory`), what helpers see (`env`), instruction semantics written
once (`semantics`) and the engines (`interpreter`).  Must not import `runtime`."""

from bpfsim.vm.env import ExecEnv, TailCall, TailCallTarget, func_pointer, func_pointer_target
from bpfsim.vm.interpreter import DEFAULT_BUDGET, Interpreter, VmEnv
from bpfsim.vm.memory import AddressSpace, Region

__all__ = ["DEFAULT_BUDGET", "AddressSpace", "ExecEnv", "Interpreter", "Region", "TailCall",
           "TailCallTarget", "VmEnv", "func_pointer", "func_pointer_target"]
