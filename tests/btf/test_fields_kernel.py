"""`Btf.field_record` against Linux: BTF built with our own serialiser is loaded with
BPF_BTF_LOAD and used to create maps; two observable effects of the kernel's btf_record tell
us what it found:
* a BPF_F_LOCK lookup succeeds only if the record is valid and holds a bpf_spin_lock;
* a PERCPU_ARRAY with the value type fails with EOPNOTSUPP only if the record is valid and
  holds a bpf_timer or a bpf_spin_lock (syscall.c: map_check_btf)."""

from __future__ import annotations

import errno
import os

import pytest

from bpfsim.btf import Btf, BtfType, Member, VarSecinfo

from . import kbpf

ARRAY, PERCPU_ARRAY = 2, 6
BPF_F_RDONLY_PROG = 1 << 7

pytestmark = pytest.mark.kernel


def _btf() -> tuple[Btf, dict[str, int]]:
    b = Btf()
    i32 = b.add(BtfType("INT", "int", size=4, encoding=1, nr_bits=32))
    u32 = b.add(BtfType("INT", "unsigned int", size=4, nr_bits=32))
    i64 = b.add(BtfType("INT", "long", size=8, encoding=1, nr_bits=64))
    lock = b.add(BtfType("STRUCT", "bpf_spin_lock", size=4, members=[Member("val", u32, 0)]))
    timer = b.add(BtfType("STRUCT", "bpf_timer", size=16))
    timers2 = b.add(BtfType("ARRAY", nelems=2, type=timer, index_type=i32))
    user = b.add(BtfType("TYPE_TAG", "user", type=i32))
    uptr = b.add(BtfType("PTR", type=user))
    iptr = b.add(BtfType("PTR", type=i32))

    def s(name: str, size: int, *members: tuple, kflag: bool = False) -> int:
        return b.add(BtfType("STRUCT", name, size=size, kflag=kflag, members=[Member(*m) for m in members]))

    inner_lock = s("inner_lock", 4, ("l", lock, 0))
    inner_timer = s("inner_timer", 24, ("x", i32, 0), ("t", timer, 64))
    cases = {
        "lock": s("v_lock", 8, ("l", lock, 0), ("x", i32, 32)),
        "timer_lock": s("v_timer_lock", 24, ("t", timer, 0), ("l", lock, 128)),
        "two_timers_lock": s("v_two", 40, ("a", timer, 0), ("b", timer, 128), ("l", lock, 256)),
        "timer_array_lock": s("v_tarr", 40, ("t", timers2, 0), ("l", lock, 256)),
        "nested_lock_bitfield": s("v_bits", 8, ("in", inner_lock, 0), ("a", u32, 32, 3), ("b", u32, 35, 5),
                                  kflag=True),
        "nested_lock": s("v_nl", 8, ("in", inner_lock, 0), ("x", i32, 32)),
        "misaligned_timer": s("v_mis", 20, ("x", i32, 0), ("t", timer, 32)),
        "nested_timer": s("v_nt", 32, ("pad", i64, 0), ("n", inner_timer, 64)),
        "user_tag_timer": s("v_utag", 24, ("p", uptr, 0), ("t", timer, 64)),
        "plain_ptr_timer": s("v_ptr", 24, ("p", iptr, 0), ("t", timer, 64)),
        "timer_only": s("v_t", 16, ("t", timer, 0)),
    }
    # more field kinds, probed only through BPF_F_RDONLY_PROG (see test_nonempty_record_matches_kernel)
    wq = b.add(BtfType("STRUCT", "bpf_wq", size=16))
    task_work = b.add(BtfType("STRUCT", "bpf_task_work", size=8))
    res_lock = b.add(BtfType("STRUCT", "bpf_res_spin_lock", size=4))
    # bpf_experimental.h's 8-byte version: btf_find_struct wants the kernel's size (4), so ignored
    res_lock8 = b.add(BtfType("STRUCT", "bpf_res_spin_lock", size=8))
    local = s("local_obj", 8, ("x", i64, 0))
    untrusted = b.add(BtfType("PTR", type=b.add(BtfType("TYPE_TAG", "kptr_untrusted", type=local))))
    percpu = b.add(BtfType("PTR", type=b.add(BtfType("TYPE_TAG", "percpu_kptr", type=local))))
    kptr_int = b.add(BtfType("PTR", type=b.add(BtfType("TYPE_TAG", "kptr_untrusted", type=i32))))
    cases.update({
        "wq": s("v_wq", 16, ("w", wq, 0)),
        "two_wq": s("v_wq2", 32, ("a", wq, 0), ("b", wq, 128)),
        "timer_wq": s("v_twq", 32, ("t", timer, 0), ("w", wq, 128)),
        "task_work": s("v_tw", 16, ("x", i64, 0), ("w", task_work, 64)),
        "res_lock": s("v_rl", 16, ("l", res_lock, 0), ("x", i64, 64)),
        "res_lock8": s("v_rl8", 16, ("l", res_lock8, 0), ("x", i64, 64)),
        # (bpf_spin_lock + bpf_res_spin_lock in one struct already fails BPF_BTF_LOAD: EINVAL
        # from btf_parse_struct_metas; the record rule is unit-tested in test_fields.py)
        "kptr_untrusted": s("v_ku", 16, ("p", untrusted, 0), ("x", i64, 64)),
        "percpu_kptr": s("v_pk", 8, ("p", percpu, 0)),
        "kptr_to_int": s("v_ki", 16, ("p", kptr_int, 0), ("t", i64, 64)),
        # (a struct with a *misaligned* kptr member makes BPF_BTF_LOAD itself fail with EFAULT:
        # btf_parse_struct_metas finds the kptr type but btf_parse_fields returns no record)
        "plain": s("v_plain", 8, ("x", i64, 0)),
    })
    vl = b.add(BtfType("VAR", "glock", type=lock, linkage=1))
    vx = b.add(BtfType("VAR", "gx", type=i32, linkage=1))
    cases["datasec_lock"] = b.add(BtfType("DATASEC", ".data", size=8,
                                          vars=[VarSecinfo(vl, 0, 4), VarSecinfo(vx, 4, 4)]))
    cases["_int"] = i32
    return b, cases


@pytest.fixture(scope="module")
def loaded():
    if not kbpf.available():
        pytest.skip("needs root and bpf(2) (bpffs at /sys/fs/bpf)")
    b, cases = _btf()
    fd, log = kbpf.btf_load(b.to_bytes())
    assert fd >= 0, f"kernel refused our serialised BTF ({-fd}):\n{log[-2000:]}"
    yield b, cases, fd
    os.close(fd)


def _kernel_record(b: Btf, cases: dict[str, int], btf_fd: int, name: str) -> tuple[bool, bool]:
    """(kernel's record has a spin lock, kernel's record has a timer or a spin lock)."""
    tid = cases[name]
    size = b.size_of(tid)
    key_tid = 0 if b.type(tid).kind == "DATASEC" else cases["_int"]
    m = kbpf.map_create(ARRAY, 4, size, 1, btf_fd, key_tid, tid)
    assert m >= 0, f"map create {name}: {-m}"
    try:
        r = kbpf.lookup_locked(m, bytes(4), size)
        assert r in (0, -errno.EINVAL)
    finally:
        os.close(m)
    has_lock = r == 0
    has_timer_or_lock = False
    if key_tid:
        p = kbpf.map_create(PERCPU_ARRAY, 4, size, 1, btf_fd, key_tid, tid)
        if p >= 0:
            os.close(p)
        else:
            assert p == -errno.EOPNOTSUPP, f"percpu create {name}: {-p}"
            has_timer_or_lock = True
    return has_lock, has_timer_or_lock


EXPECTED = {   # what we predict, and the kernel must agree (lock, timer, valid)
    "lock": (True, False, True),
    "timer_lock": (True, True, True),
    "two_timers_lock": (False, False, False),
    "timer_array_lock": (False, False, False),
    "nested_lock_bitfield": (False, False, False),
    "nested_lock": (True, False, True),
    "misaligned_timer": (False, False, True),
    "nested_timer": (False, True, True),
    "user_tag_timer": (False, False, False),
    "plain_ptr_timer": (False, True, True),
    "timer_only": (False, True, True),
    "datasec_lock": (True, False, True),
}


def _rdonly_prog_refused(b: Btf, cases: dict[str, int], btf_fd: int, name: str) -> bool:
    """map_check_btf refuses BPF_F_RDONLY_PROG (EACCES) iff the record is valid and non-empty."""
    tid = cases[name]
    key_tid = 0 if b.type(tid).kind == "DATASEC" else cases["_int"]
    m = kbpf.map_create(ARRAY, 4, b.size_of(tid), 1, btf_fd, key_tid, tid, flags=BPF_F_RDONLY_PROG)
    if m >= 0:
        os.close(m)
        return False
    assert m == -errno.EACCES, f"{name}: {-m}"
    return True


@pytest.mark.parametrize("name", sorted(set(_btf()[1]) - {"_int"}))
def test_nonempty_record_matches_kernel(loaded, name):
    b, cases, fd = loaded
    rec = b.field_record(cases[name])
    assert _rdonly_prog_refused(b, cases, fd, name) == bool(rec.valid and rec.fields), rec


NONEMPTY = {"wq": ["bpf_wq"], "timer_wq": ["bpf_timer", "bpf_wq"], "task_work": ["bpf_task_work"],
            "res_lock": ["bpf_res_spin_lock"], "kptr_untrusted": ["kptr_untrusted"],
            "percpu_kptr": ["percpu_kptr"]}


def test_field_kinds():
    b, cases = _btf()
    for name, kinds in NONEMPTY.items():
        assert [f.kind for f in b.special_fields(cases[name])] == kinds, name
    for name in ("two_wq", "kptr_to_int"):
        assert not b.field_record(cases[name]).valid, name
    for name in ("plain", "res_lock8"):
        assert b.field_record(cases[name]).fields == (), name


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_record_matches_kernel(loaded, name):
    b, cases, fd = loaded
    rec = b.field_record(cases[name])
    ours = (rec.spin_lock_off is not None, rec.timer_off is not None, rec.valid)
    assert ours == EXPECTED[name], rec
    if b.type(cases[name]).kind == "DATASEC":
        assert _kernel_record(b, cases, fd, name)[0] == ours[0]
    else:
        assert _kernel_record(b, cases, fd, name) == (ours[0], ours[0] or ours[1])


def _load_case(name: str) -> Btf:
    """One small BTF per case for BPF_BTF_LOAD's own struct scan (btf_parse_struct_metas)."""
    b = Btf()
    i32 = b.add(BtfType("INT", "int", size=4, encoding=1, nr_bits=32))
    u32 = b.add(BtfType("INT", "unsigned int", size=4, nr_bits=32))
    lock = b.add(BtfType("STRUCT", "bpf_spin_lock", size=4, members=[Member("val", u32, 0)]))
    local = b.add(BtfType("STRUCT", "local_obj", size=8, members=[Member("x", i32, 0)]))

    def ptr_tag(tag: str, target: int) -> int:
        return b.add(BtfType("PTR", type=b.add(BtfType("TYPE_TAG", tag, type=target))))

    def s(sname: str, size: int, *members: tuple, kflag: bool = False) -> int:
        return b.add(BtfType("STRUCT", sname, size=size, kflag=kflag, members=[Member(*m) for m in members]))

    if name == "lock_and_res_lock":
        res = b.add(BtfType("STRUCT", "bpf_res_spin_lock", size=4, members=[Member("val", u32, 0)]))
        s("v", 8, ("l", lock, 0), ("r", res, 32))
    elif name == "misaligned_kptr":
        s("v", 12, ("x", i32, 0), ("p", ptr_tag("kptr_untrusted", local), 32))
    elif name == "lock_bitfield":
        s("v", 8, ("l", lock, 0), ("a", u32, 32, 3), ("b", u32, 35, 5), kflag=True)
    elif name == "kptr_to_int_with_lock":
        s("v", 16, ("l", lock, 0), ("p", ptr_tag("kptr", i32), 64))
    elif name == "list_head_untagged":
        head = b.add(BtfType("STRUCT", "bpf_list_head", size=16))
        s("v", 24, ("h", head, 0), ("l", lock, 128))
    elif name == "list_head_ok":
        head = b.add(BtfType("STRUCT", "bpf_list_head", size=16))
        node = b.add(BtfType("STRUCT", "bpf_list_node", size=24))
        s("elem", 32, ("v", i32, 0), ("n", node, 64))
        root = s("root", 24, ("h", head, 0), ("l", lock, 128))
        b.add(BtfType("DECL_TAG", "contains:elem:n", type=root, component_idx=0))
    elif name == "uptr_only":
        s("v", 8, ("p", ptr_tag("uptr", local), 0))
    elif name == "kptr_ok":
        s("v", 16, ("l", lock, 0), ("p", ptr_tag("kptr_untrusted", local), 64))
    return b


LOAD_CASES = {"lock_and_res_lock": 22, "misaligned_kptr": 14, "lock_bitfield": 22,
              "kptr_to_int_with_lock": 22, "list_head_untagged": 22, "list_head_ok": None,
              "uptr_only": None, "kptr_ok": None}


@pytest.mark.parametrize("name", sorted(LOAD_CASES))
def test_btf_load_error_matches_kernel(name):
    if not kbpf.available():
        pytest.skip("needs root and bpf(2)")
    b = _load_case(name)
    predicted = b.load_error()
    assert (predicted[0] if predicted else None) == LOAD_CASES[name], predicted
    fd, log = kbpf.btf_load(b.to_bytes())
    if fd >= 0:
        os.close(fd)
    assert (None if fd >= 0 else -fd) == LOAD_CASES[name], log[-500:]
