"""BTF and BTF.ext: parsing, queries, value <-> Python conversion, bpftool-shaped dumps.

Public names: `Btf`, `BtfExt`, the data classes of `types`.  Must not import `spec` or any
layer above it, nor touch the OS.
"""

from bpfsim.btf.btf import Btf
from bpfsim.btf.ext import BtfExt, CoreRelo, FuncInfoRec, LineInfoRec
from bpfsim.btf.fields import FieldRecord
from bpfsim.btf.types import BtfType, EnumValue, Member, Param, SpecialField, VarSecinfo

__all__ = ["Btf", "BtfExt", "BtfType", "CoreRelo", "EnumValue", "FieldRecord", "FuncInfoRec",
           "LineInfoRec", "Member", "Param", "SpecialField", "VarSecinfo"]
