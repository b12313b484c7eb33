"""`Btf.field_record` / `special_fields` without a kernel (the kernel-checked cases are in
test_fields_kernel.py): the fixture's map values and synthetic kptr / graph-root layouts."""

from __future__ import annotations

from bpfsim.btf import Btf, BtfType, Member, SpecialField, VarSecinfo


def test_fixture_values(types_btf):
    b = types_btf
    rec = b.field_record(b.find("timer_val", "STRUCT"))
    assert rec.valid and (rec.timer_off, rec.spin_lock_off) == (0, 16)
    assert b.special_fields(b.find("timer_val")) == [SpecialField("bpf_timer", 0, 16),
                                                       SpecialField("bpf_spin_lock", 16, 4)]
    two = b.field_record(b.find("two_timers", "STRUCT"))
    assert not two.valid and two.errno == 7 and two.timer_off is None   # -E2BIG: no record at all
    assert b.special_fields(b.find("two_timers")) == []
    assert b.field_record(b.find("nested_timer", "STRUCT")).timer_off == 16
    # struct rich holds bitfields: btf_find_struct_field refuses non-byte-aligned members
    rich = b.field_record(b.find("rich", "STRUCT"))
    assert not rich.valid and rich.errno == 22
    assert b.field_record(b.find("floats", "STRUCT")).fields == ()
    assert b.field_record(b.find("int", "INT")).fields == ()


def _base() -> tuple[Btf, dict[str, int]]:
    b = Btf()
    ids = {}
    ids["int"] = b.add(BtfType("INT", "int", size=4, encoding=1, nr_bits=32))
    ids["u32"] = b.add(BtfType("INT", "u32", size=4, nr_bits=32))
    ids["task"] = b.add(BtfType("STRUCT", "task_struct", size=8, members=[Member("x", ids["int"], 0)]))
    ids["lock"] = b.add(BtfType("STRUCT", "bpf_spin_lock", size=4, members=[Member("val", ids["u32"], 0)]))
    ids["head"] = b.add(BtfType("STRUCT", "bpf_list_head", size=16))
    ids["node"] = b.add(BtfType("STRUCT", "bpf_list_node", size=24))
    ids["elem"] = b.add(BtfType("STRUCT", "elem", size=32,
                                members=[Member("v", ids["int"], 0), Member("n", ids["node"], 64)]))
    for tag in ("kptr", "kptr_untrusted", "percpu_kptr", "uptr"):
        t = b.add(BtfType("TYPE_TAG", tag, type=ids["task"]))
        ids[tag] = b.add(BtfType("PTR", type=t))
    return b, ids


def _struct(b: Btf, name: str, size: int, *members: tuple) -> int:
    return b.add(BtfType("STRUCT", name, size=size, members=[Member(*m) for m in members]))


def test_kptrs_and_repeats():
    b, ids = _base()
    arr = b.add(BtfType("ARRAY", type=ids["kptr"], index_type=ids["int"], nelems=3))
    v = _struct(b, "v", 40, ("a", ids["kptr_untrusted"], 0), ("k", arr, 64), ("p", ids["percpu_kptr"], 256))
    rec = b.field_record(v)
    assert rec.valid
    assert [(f.kind, f.offset) for f in rec.fields] == [
        ("kptr_untrusted", 0), ("kptr", 8), ("kptr", 16), ("kptr", 24), ("percpu_kptr", 32)]
    big = b.add(BtfType("ARRAY", type=ids["kptr"], index_type=ids["int"], nelems=12))
    assert b.field_record(_struct(b, "w", 96, ("k", big, 0))).errno == 7   # > BTF_FIELDS_MAX


def test_list_head_rules():
    b, ids = _base()
    with_lock = _struct(b, "root", 24, ("h", ids["head"], 0), ("l", ids["lock"], 128))
    b.add(BtfType("DECL_TAG", "contains:elem:n", type=with_lock, component_idx=0))
    rec = b.field_record(with_lock)
    assert rec.valid and [f.kind for f in rec.fields] == ["bpf_list_head", "bpf_spin_lock"]
    no_lock = _struct(b, "root2", 16, ("h", ids["head"], 0))
    b.add(BtfType("DECL_TAG", "contains:elem:n", type=no_lock, component_idx=0))
    assert b.field_record(no_lock).error == "bpf_list_head/bpf_rb_root need a bpf_spin_lock"
    untagged = _struct(b, "root3", 24, ("h", ids["head"], 0), ("l", ids["lock"], 128))
    assert not b.field_record(untagged).valid
    bad_node = _struct(b, "root4", 24, ("h", ids["head"], 0), ("l", ids["lock"], 128))
    b.add(BtfType("DECL_TAG", "contains:elem:v", type=bad_node, component_idx=0))
    assert "is not a bpf_list_node" in b.field_record(bad_node).error


def test_datasec_and_typedef_rules():
    b, ids = _base()
    lock_td = b.add(BtfType("TYPEDEF", "lock_t", type=ids["lock"]))
    # a typedef'd lock is not a lock (btf_get_field_type matches the struct's own name)
    assert b.field_record(_struct(b, "t", 4, ("l", lock_td, 0))).fields == ()
    var = b.add(BtfType("VAR", "g", type=ids["lock"], linkage=1))
    ds = b.add(BtfType("DATASEC", ".data", size=4, vars=[]))
    b.type(ds).vars.append(VarSecinfo(var, 0, 4))
    assert b.field_record(ds).spin_lock_off == 0
    b.type(ds).vars[0].size = 8     # the VAR's size must match the field's
    assert b.field_record(ds).fields == ()


def test_spin_lock_and_res_spin_lock_exclude_each_other():
    b, ids = _base()
    res = b.add(BtfType("STRUCT", "bpf_res_spin_lock", size=4, members=[Member("val", ids["u32"], 0)]))
    rec = b.field_record(_struct(b, "both", 8, ("l", ids["lock"], 0), ("r", res, 32)))
    assert not rec.valid and rec.errno == 22


def test_timers_at_two_levels_last_one_is_cached():
    """Uniqueness is checked per struct level, so two nested timers make a valid record whose
    timer_off is the later one (btf_parse_fields overwrites rec->timer_off)."""
    b, ids = _base()
    timer = b.add(BtfType("STRUCT", "bpf_timer", size=16))
    wrap = _struct(b, "wrap", 16, ("t", timer, 0))
    v = _struct(b, "two_levels", 32, ("a", timer, 0), ("w", wrap, 128))
    rec = b.field_record(v)
    assert rec.valid and [f.offset for f in rec.fields] == [0, 16] and rec.timer_off == 16
