"""The inert, deterministic, editable blueprint of a BPF object, and the reader that builds it.

Must not create anything live; must not import verifier, vm, runtime or kernel.
"""

from bpfsim.spec.collection import (
    REF_KFUNC,
    REF_MAP,
    REF_MAP_VALUE,
    CollectionSpec,
    CoreRelo,
    FuncInfo,
    LineInfo,
    MapSpec,
    ProgramSpec,
    Reference,
    VariableSpec,
)
from bpfsim.spec.reader import internal_map_name, load_spec

__all__ = [
    "REF_KFUNC", "REF_MAP", "REF_MAP_VALUE", "CollectionSpec", "CoreRelo", "FuncInfo",
    "LineInfo", "MapSpec", "ProgramSpec", "Reference", "VariableSpec", "internal_map_name",
    "load_spec",
]
