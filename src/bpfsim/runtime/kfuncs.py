"""The kfuncs the emulated kernel offers, by name, and the per-program table the VM calls.

Job: a `__ksym` extern function call (`REF_KFUNC`, `call src=BPF_PSEUDO_KFUNC_CALL`) names its
kfunc; the loader numbers the kfuncs a program uses (the emulator's stand-in for their vmlinux
BTF ids) and hands the VM `{imm: fn}`.  A kfunc bpfsim does not implement raises NotSupported
naming it when called, as an unimplemented helper does -- never a silent wrong value.
Must not import `kernel` (the real one).
"""

from __future__ import annotations

from bpfsim.errors import NotSupported
from bpfsim.vm.env import ExecEnv, Helper


def _rcu_read_nest(env: ExecEnv, *_args: int) -> int:
    """helpers.c: bpf_rcu_read_lock/unlock -> rcu_read_lock()/rcu_read_unlock().  Every run is
    already inside an RCU read section (`kernel.rcu_read_lock` around it), and the verifier
    only accepts balanced pairs (verifier.c: "unmatched rcu read unlock"), so a nested pair
    changes nothing observable: a no-op, which also cannot end the run's own section early."""
    return 0


KFUNCS: dict[str, Helper] = {
    "bpf_rcu_read_lock": _rcu_read_nest,
    "bpf_rcu_read_unlock": _rcu_read_nest,
}


def _missing(name: str) -> Helper:
    def not_implemented(env: ExecEnv, *_args: int) -> int:
        raise NotSupported(f"kfunc {name}", detail="not implemented by the bpfsim runtime")

    not_implemented.__name__ = name
    return not_implemented


def kfunc(name: str) -> Helper:
    """The implementation of kfunc `name` (a NotSupported stub if bpfsim lacks it)."""
    return KFUNCS.get(name) or _missing(name)
