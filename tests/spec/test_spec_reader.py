"""`load_spec` on real clang objects: maps, global data, programs, linking, initial values,
determinism, editing, both byte orders.  Expected values were checked against libbpf
(`bpftool prog loadall` + `bpftool map list`, see test_kernel_compare.py) and llvm-objdump."""

from __future__ import annotations

from pathlib import Path

import pytest

import bpfsim
from bpfsim.errors import LinkError, ParseError
from bpfsim.spec import REF_MAP, REF_MAP_VALUE, internal_map_name, load_spec
from bpfsim.uapi.constants import (
    BPF_F_MMAPABLE,
    BPF_F_NO_COMMON_LRU,
    BPF_F_RDONLY_PROG,
    BPF_F_SLEEPABLE,
    BPF_F_XDP_HAS_FRAGS,
    BPF_PSEUDO_CALL,
    BPF_PSEUDO_FUNC,
    BPF_PSEUDO_MAP_FD,
    BPF_PSEUDO_MAP_VALUE,
    LIBBPF_PIN_BY_NAME,
    AttachType,
    MapType,
    ProgType,
)

ROOT = Path(__file__).resolve().parents[2]
PROGS = ROOT / "tests" / "fixtures" / "progs"


def _maps(spec):
    return {k: (m.kernel_name, m.type, m.key_size, m.value_size, m.max_entries, m.flags)
            for k, m in spec.maps.items()}


def test_globals_maps_match_libbpf() -> None:
    spec = load_spec(PROGS / "globals.bpf.o")
    rw, ro = BPF_F_MMAPABLE, BPF_F_MMAPABLE | BPF_F_RDONLY_PROG
    assert _maps(spec) == {
        "pinned_stats": ("pinned_stats", MapType.ARRAY, 4, 8, 4, 0),
        "lru": ("lru", MapType.LRU_HASH, 16, 4, 128, BPF_F_NO_COMMON_LRU),
        ".rodata": ("globals.rodata", MapType.ARRAY, 4, 32, 1, ro),
        ".data": ("globals.data", MapType.ARRAY, 4, 12, 1, rw),
        ".data.custom": (".data.custom", MapType.ARRAY, 4, 4, 1, rw),
        ".rodata.custom": (".rodata.custom", MapType.ARRAY, 4, 4, 1, ro),
        ".bss": ("globals.bss", MapType.ARRAY, 4, 40, 1, rw),
    }
    assert spec.maps["pinned_stats"].pinning == LIBBPF_PIN_BY_NAME
    assert spec.maps[".rodata"].freeze and not spec.maps[".data"].freeze
    assert spec.maps[".rodata"].is_global_data and spec.maps[".rodata"].section == ".rodata"
    assert spec.btf is not None
    assert spec.btf.name_of(spec.maps["lru"].key_type_id) == "pair"
    assert spec.btf.type(spec.maps[".bss"].value_type_id).kind == "DATASEC"
    assert spec.license == "GPL"


def test_globals_variables_and_editing() -> None:
    spec = load_spec(PROGS / "globals.bpf.o")
    v = spec.variables
    assert {"target_port", "ro_pair", "packets", "zeroed", "big_bss", "custom_data",
            "custom_ro", "hidden_counter"} <= set(v)
    assert (v["target_port"].map_name, v["target_port"].offset, v["target_port"].size) == (".rodata", 0, 4)
    assert v["packets"].raw == (7).to_bytes(8, "little")
    assert v["custom_data"].map_name == ".data.custom" and v["custom_data"].raw == (42).to_bytes(4, "little")
    assert v["zeroed"].map_name == ".bss" and v["zeroed"].raw == bytes(4)
    v["target_port"].raw = (8080).to_bytes(4, "little")
    assert spec.maps[".rodata"].initial_value[:4] == (8080).to_bytes(4, "little")
    spec.maps["lru"].max_entries = 16
    assert spec.maps["lru"].max_entries == 16


def test_variable_value_through_btf() -> None:
    spec = load_spec(PROGS / "globals.bpf.o")
    try:
        assert spec.variables["target_port"].value == 80
    except (ImportError, AttributeError, NotImplementedError):
        pytest.skip("BTF value codec not available yet")
    spec.variables["target_port"].value = 8080
    assert spec.variables["target_port"].value == 8080
    assert spec.maps[".rodata"].initial_value[:4] == (8080).to_bytes(4, "little")


def test_globals_programs_and_linking() -> None:
    spec = load_spec(PROGS / "globals.bpf.o")
    assert list(spec.programs) == ["sock_one", "sock_two", "xdp_count"]   # section, offset order
    one, two, xdp = (spec.programs[n] for n in ("sock_one", "sock_two", "xdp_count"))
    assert (one.type, one.section, one.expected_attach_type) == (ProgType.SOCKET_FILTER, "socket", 0)
    assert (xdp.type, xdp.expected_attach_type) == (ProgType.XDP, AttachType.XDP)
    # llvm-readelf symbol sizes: sock_one 18 + bump 19 + add_port 10; sock_two 13 + add_port 10
    assert len(one.instructions) == 47
    assert one.subprogram_starts == {"sock_one": 0, "bump": 18, "add_port": 37}
    assert len(two.instructions) == 23 and two.subprogram_starts == {"sock_two": 0, "add_port": 13}
    assert len(xdp.instructions) == 49
    assert xdp.subprogram_starts == {"xdp_count": 0, "bump": 20, "add_port": 39}
    for p in spec.programs.values():
        for i, insn in enumerate(p.instructions):
            if insn.opcode == 0x85 and insn.src == BPF_PSEUDO_CALL:
                assert i + 1 + insn.imm in p.subprogram_starts.values()
        for r in p.references:
            head = p.instructions[r.insn]
            assert head.opcode == 0x18
            if r.kind == REF_MAP:
                assert head.src == BPF_PSEUDO_MAP_FD and r.target in spec.maps
            else:
                assert r.kind == REF_MAP_VALUE and head.src == BPF_PSEUDO_MAP_VALUE
                assert p.instructions[r.insn + 1].imm == r.offset
                assert 0 <= r.offset < spec.maps[r.target].value_size
    assert {r.target for r in one.references} == {"pinned_stats", ".data", ".bss", ".rodata",
                                                    ".data.custom"}
    # bpf_printk's format string lives in .rodata: sock_two reads it at an offset
    assert any(r.target == ".rodata" and r.offset > 0 for r in two.references)


def test_subprogram_references_are_rebased() -> None:
    """A map reference inside a .text subprogram lands at its slot in each program."""
    spec = load_spec(PROGS / "globals.bpf.o")
    for name in ("sock_one", "xdp_count"):
        p = spec.programs[name]
        base = p.subprogram_starts["bump"]
        refs = [r for r in p.references if r.target == "pinned_stats"]
        assert len(refs) == 1 and base <= refs[0].insn < p.subprogram_starts["add_port"]


def test_callbacks_are_linked_as_pseudo_func() -> None:
    spec = load_spec(PROGS / "callbacks.bpf.o")
    p = spec.programs["tc_callbacks"]
    assert p.type == ProgType.SCHED_CLS and p.section == "tc"
    assert p.subprogram_starts == {"tc_callbacks": 0, "loop_cb": 48, "walk_cb": 57, "timer_cb": 65}
    assert len(p.instructions) == 70
    funcs = [(i, insn) for i, insn in enumerate(p.instructions)
             if insn.opcode == 0x18 and insn.src == BPF_PSEUDO_FUNC]
    targets = sorted(i + 1 + insn.imm for i, insn in funcs)
    assert targets == [48, 57, 65]
    assert spec.maps["timers"].value_size == 24 and spec.maps["timers"].type == MapType.HASH
    assert spec.maps[".bss"].kernel_name == "callback.bss"     # object name cut to 8 chars


def test_map_in_map_and_prog_array_values() -> None:
    spec = load_spec(PROGS / "map_in_map.bpf.o")
    outer = spec.maps["outer"]
    assert outer.type == MapType.ARRAY_OF_MAPS and outer.value_size == 4
    assert outer.inner is not None and outer.inner.name == "outer.inner"
    assert (outer.inner.type, outer.inner.max_entries, outer.inner.value_size) == (MapType.ARRAY, 2, 4)
    assert outer.contents == [((0).to_bytes(4, "little"), "inner_a"), ((2).to_bytes(4, "little"), "inner_b")]
    assert spec.maps["outer_hash"].inner.name == "outer_hash.inner"
    assert spec.maps["outer_hash"].contents == []
    jumps = spec.maps["jumps"]
    assert jumps.type == MapType.PROG_ARRAY and (jumps.key_size, jumps.value_size) == (4, 4)
    assert jumps.contents == [((0).to_bytes(4, "little"), "tail_a"), ((1).to_bytes(4, "little"), "tail_b")]
    assert spec.license == "Dual MIT/GPL"
    assert {r.target for r in spec.programs["entry"].references} == {"outer", "jumps"}


def test_section_table_drives_program_types() -> None:
    spec = load_spec(PROGS / "sections.bpf.o")
    got = {n: (p.type, p.expected_attach_type, p.attach_to, p.flags, p.sleepable, p.autoload)
           for n, p in spec.programs.items()}
    assert got == {
        "lazy": (ProgType.XDP, AttachType.XDP, "", 0, False, False),
        "frags": (ProgType.XDP, AttachType.XDP, "", BPF_F_XDP_HAS_FRAGS, False, True),
        "sys": (ProgType.SYSCALL, 0, "", BPF_F_SLEEPABLE, True, True),
        "kp": (ProgType.KPROBE, 0, "do_sys_open", 0, False, True),
        "tpb": (ProgType.TRACING, AttachType.TRACE_RAW_TP, "sched_switch", 0, False, True),
        "cg": (ProgType.CGROUP_SKB, AttachType.CGROUP_INET_EGRESS, "", 0, False, True),
        "tcx": (ProgType.SCHED_CLS, AttachType.TCX_INGRESS, "", 0, False, True),
    }
    assert spec.programs["lazy"].section == "xdp"          # libbpf forgets the "?"


def test_big_endian_build_gives_the_same_spec_in_big_endian() -> None:
    le, be = load_spec(PROGS / "globals.bpf.o"), load_spec(PROGS / "globals.bpfeb.o")
    assert be.byteorder == "big"
    assert _maps(le) == _maps(be)
    assert le.variables.keys() == be.variables.keys()
    assert be.variables["packets"].raw == (7).to_bytes(8, "big")
    for name, p in le.programs.items():
        q = be.programs[name]
        assert [(i.opcode, i.dst, i.src, i.off, i.imm) for i in p.instructions] == \
               [(i.opcode, i.dst, i.src, i.off, i.imm) for i in q.instructions]
        assert p.references == q.references and p.subprogram_starts == q.subprogram_starts


def test_deterministic_and_copyable() -> None:
    data = (PROGS / "globals.bpf.o").read_bytes()
    a, b = load_spec(data, name="globals"), load_spec(PROGS / "globals.bpf.o")
    b.path = ""
    assert a == b
    c = a.copy()
    c.variables["packets"].raw = (1).to_bytes(8, "little")
    assert a.variables["packets"].raw == (7).to_bytes(8, "little")
    assert c.maps[".data"].initial_value[:8] == (1).to_bytes(8, "little")


def test_bytes_without_name_use_bare_section_names() -> None:
    spec = load_spec((PROGS / "globals.bpf.o").read_bytes())
    assert spec.maps[".rodata"].kernel_name == ".rodata"


def test_public_entry_point() -> None:
    spec = bpfsim.load_spec(str(PROGS / "map_in_map.bpf.o"))
    assert "entry" in spec.programs and spec.name == "map_in_map"


@pytest.mark.parametrize("obj,real,expected", [
    ("globals", ".rodata", "globals.rodata"),
    ("callbacks", ".bss", "callback.bss"),
    ("a_very_long_object", ".data", "a_very_l.data"),
    ("x", ".rodata.str1.1", ".rodata.str1.1"),
    ("x", ".data.a_very_long_custom_name", ".data.a_very_lo"),
    ("my-obj", ".bss", "my_obj.bss"),
])
def test_internal_map_name(obj: str, real: str, expected: str) -> None:
    assert internal_map_name(obj, real) == expected


EXAMPLES = sorted((ROOT / "examples").glob("*/*.bpf.o"))
BENCH = sorted((ROOT / "bench" / "objects").glob("*.bpf.o"))


@pytest.mark.parametrize("obj", EXAMPLES + BENCH, ids=lambda p: p.name)
def test_examples_and_bench_objects_load(obj: Path) -> None:
    spec = load_spec(obj)
    assert spec.programs and spec.license
    assert all(p.instructions for p in spec.programs.values())


def test_bench_objects_are_all_there() -> None:
    assert {p.name for p in BENCH} == {f"{n}.bpf.o" for n in
                                       ("loop_arith", "fnv_packet", "parse_packet", "hash_map", "empty")}
    spec = load_spec(ROOT / "bench" / "objects" / "hash_map.bpf.o")
    m = spec.maps["bench_hmap"]
    assert (m.type, m.key_size, m.value_size, m.max_entries) == (MapType.HASH, 4, 8, 1024)


def test_examples_specs() -> None:
    pp = load_spec(ROOT / "examples" / "packet_parser" / "packet_parser.bpf.o")
    assert pp.programs["xdp_parse"].type == ProgType.XDP
    assert pp.variables["blocked_port"].size == 2
    pp.variables["blocked_port"].raw = (8080).to_bytes(2, "little")
    c = load_spec(ROOT / "examples" / "counter" / "counter.bpf.o")
    assert c.programs["count_packets"].type == ProgType.SCHED_CLS
    assert c.maps["proto_count"].type == MapType.HASH
    assert c.maps["byte_count"].type == MapType.PERCPU_ARRAY


def test_unknown_sections_can_be_allowed() -> None:
    obj = PROGS / "bad" / "unknown_section.bpf.o"
    spec = load_spec(obj, allow_unknown_sections=True)
    assert spec.programs["prog"].type == ProgType.UNSPEC


def test_missing_license_is_empty_like_libbpf() -> None:
    spec = load_spec(PROGS / "no_license.bpf.o")
    assert spec.license == "" and spec.programs["prog"].license == ""


@pytest.mark.parametrize("name,exc,msg", [
    ("unknown_section", ParseError, r"^load programs: unknown section 'not_a_hook'"),
    ("unknown_map_field", ParseError, r"^load maps: map 'm': unknown field 'colour'"),
    ("bad_pinning", ParseError, r"^load maps: map 'm': invalid pinning value 7"),
    ("conflicting_key", ParseError, r"^load maps: map 'm': conflicting key size 8 != 4"),
    ("no_map_type", ParseError, r"^load maps: map 'm': map type isn't specified"),
    ("values_on_hash", ParseError, r"^load maps: map 'm': should be map-in-map or prog-array"),
    ("bad_license", ParseError, r"^load license: license is not a NUL-terminated string"),
    ("no_btf", ParseError, r"^load maps: '.maps' section needs BTF"),
    ("ksym_var", LinkError, r"^link programs: .*extern variable 'bpf_prog_active' \(.ksyms\)"),
    ("kconfig_missing", LinkError, r"^load global data: extern \(kcfg\) 'CONFIG_HZ': value not found"),
    ("legacy_maps", ParseError, r"^load maps: legacy map definitions in 'maps' section"),
])
def test_bad_objects(name: str, exc: type, msg: str) -> None:
    with pytest.raises(exc, match=msg):
        load_spec(PROGS / "bad" / f"{name}.bpf.o")


def test_garbage_is_a_read_elf_error() -> None:
    with pytest.raises(ParseError, match="^read ELF: not an ELF file"):
        load_spec(b"hello")


def test_func_and_line_info_are_rebased() -> None:
    spec = load_spec(PROGS / "globals.bpf.o")
    p = spec.programs["sock_one"]
    assert [(f.insn, f.name) for f in p.func_info] == [(0, "sock_one"), (18, "bump"), (37, "add_port")]
    assert p.btf_func_id == p.func_info[0].type_id
    assert spec.btf.type(p.btf_func_id).kind == "FUNC"
    assert p.line_info and p.line_info[0].insn == 0
    assert all(0 <= li.insn < len(p.instructions) for li in p.line_info)
    assert all(li.file == "./globals.bpf.c" for li in p.line_info)
    cb = load_spec(PROGS / "callbacks.bpf.o").programs["tc_callbacks"]
    assert [(f.insn, f.name) for f in cb.func_info] == [
        (0, "tc_callbacks"), (48, "loop_cb"), (57, "walk_cb"), (65, "timer_cb")]


def test_core_relocations_are_kept_and_rebased() -> None:
    spec = load_spec(PROGS / "core.bpf.o")
    p = spec.programs["core_prog"]
    assert p.subprogram_starts == {"core_prog": 0, "read_state": 11}
    got = [(r.insn, spec.btf.name_of(r.type_id), r.access, r.kind) for r in p.core_relos]
    # kinds: 0 FIELD_BYTE_OFFSET, 1 FIELD_BYTE_SIZE, 2 FIELD_EXISTS (enum bpf_core_relo_kind)
    assert got == [(1, "task_like", "0:2", 2), (3, "task_like", "0:2", 1),
                   (7, "task_like", "0:0", 0), (11, "task_like", "0:1", 0)]
    # against the object's own BTF (the emulator is its own kernel) clang's values stand
    assert p.instructions[11].imm == 8 and p.instructions[3].imm == 16 and p.instructions[1].imm == 1


def _patched_relocation(rel_section: str, index: int, *, offset: int | None = None,
                        symbol: str | None = None, rtype: int | None = None) -> bytes:
    """globals.bpf.o with relocation `index` of `rel_section` rewritten (little endian)."""
    import struct

    from bpfsim.elf.reader import read_elf

    data = bytearray((PROGS / "globals.bpf.o").read_bytes())
    o = read_elf(bytes(data))
    sec = o.section(rel_section)
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    base = struct.unpack_from("<Q", data, shoff + sec.index * 64 + 0x18)[0] + index * 16
    r_off, r_info = struct.unpack_from("<QQ", data, base)
    if offset is not None:
        r_off = offset
    if symbol is not None:
        r_info = (next(s.index for s in o.symbols if s.name == symbol) << 32) | (r_info & 0xFFFFFFFF)
    if rtype is not None:
        r_info = (r_info & ~0xFFFFFFFF) | rtype
    struct.pack_into("<QQ", data, base, r_off, r_info)
    return bytes(data)


@pytest.mark.parametrize("patch,msg", [
    (dict(rel_section=".rel.text", index=0, symbol="_license"),
     r"^link programs: .*bad map relo against '_license' in section 'license'"),
    (dict(rel_section=".rel.text", index=0, offset=8),
     r"^link programs: .*invalid relo against 'pinned_stats' for insn code"),
    (dict(rel_section=".relsocket", index=4, symbol="packets"),
     r"^link programs: .*bad call relo against 'packets'"),
    (dict(rel_section=".rel.text", index=0, rtype=10),
     r"^link programs: .*unexpected relocation type 10 on lddw"),
    (dict(rel_section=".rel.text", index=0, offset=3),
     r"^load programs: sec '.text': bad relo offset 3"),
])
def test_bad_relocations_are_link_errors(patch: dict, msg: str) -> None:
    with pytest.raises(LinkError, match=msg):
        load_spec(_patched_relocation(**patch))


def test_static_program_outside_text_is_refused() -> None:
    with pytest.raises(ParseError, match="program 'hidden' is static and not supported"):
        load_spec(PROGS / "bad" / "static_prog.bpf.o")


def test_kconfig_externs_follow_libbpf_layout() -> None:
    """Offsets, size, name and flags as libbpf 1.1 printed them for this object on 6.18."""
    spec = load_spec(PROGS / "kconfig.bpf.o")
    m = spec.maps[".kconfig"]
    assert (m.kernel_name, m.value_size, m.flags, m.freeze) == (
        "kconfig.kconfig", 30, BPF_F_RDONLY_PROG | BPF_F_MMAPABLE, True)
    v = spec.variables
    assert {n: (v[n].offset, v[n].size) for n in v} == {
        "CONFIG_HZ": (0, 8), "LINUX_KERNEL_VERSION": (8, 4), "CONFIG_BPF_SYSCALL": (12, 1),
        "LINUX_HAS_BPF_COOKIE": (13, 1), "CONFIG_DEFAULT_HOSTNAME": (14, 16)}
    assert v["LINUX_KERNEL_VERSION"].raw == (6 << 16 | 18 << 8).to_bytes(4, "little")
    assert v["LINUX_HAS_BPF_COOKIE"].raw == b"\1" and v["CONFIG_HZ"].raw == bytes(8)   # weak: 0
    refs = spec.programs["kcfg"].references
    assert sorted(r.offset for r in refs) == [0, 8, 12, 13, 14]
    assert all(r.target == ".kconfig" and r.kind == REF_MAP_VALUE for r in refs)
    given = load_spec(PROGS / "kconfig.bpf.o",
                      kconfig={"CONFIG_HZ": 250, "CONFIG_BPF_SYSCALL": "y",
                               "CONFIG_DEFAULT_HOSTNAME": "(none)"}).variables
    assert given["CONFIG_HZ"].raw == (250).to_bytes(8, "little")
    assert given["CONFIG_BPF_SYSCALL"].raw == b"\1"
    assert given["CONFIG_DEFAULT_HOSTNAME"].raw == b"(none)".ljust(16, b"\0")
    with pytest.raises(LinkError, match="does not fit"):
        load_spec(PROGS / "kconfig.bpf.o", kconfig={"CONFIG_DEFAULT_HOSTNAME": "x" * 20})
