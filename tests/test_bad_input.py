"""The bad-input contract, end to end (DESIGN.md "Command line" and "Errors"): whatever is wrong
-- the file, its bytes, its BTF, the arguments, a pin -- `bpfsim` exits 2 with exactly one line
on stderr and never a traceback; the Python API raises one BpfError and leaves no partial state
(no maps, programs, pins or memory of a failed load; a map untouched by a refused write).

Mutated objects go through the whole CLI (load, verifier, run, dumps), not only the parser:
tests/spec/test_spec_fuzz.py holds `load_spec` alone to ParseError.
"""

from __future__ import annotations

import contextlib
import os
import resource
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import bpfsim
from bpfsim.errors import BpfError, UsageError, VerifierError
from bpfsim.runtime.kobject import live_objects

REPO = Path(__file__).resolve().parent.parent
PACKET = REPO / "examples/timer/packet.bin"
TIMER = REPO / "examples/timer/timer_nocancel.bpf.o"
COUNTER = REPO / "examples/counter/counter.bpf.o"
BAD_FIXTURES = sorted((REPO / "tests/fixtures/progs/bad").glob("*.bpf.o"))

# every subcommand that reads an object file, with the options it needs to get going
OBJ_COMMANDS = {
    "run": lambda obj: ["run", obj, "--data", PACKET, "--advance", "1s"],
    "run-json": lambda obj: ["run", obj, "--data", PACKET, "--json"],
    "verify": lambda obj: ["verify", obj, "--json"],
    "maps": lambda obj: ["maps", "dump", obj],
    "disasm": lambda obj: ["disasm", obj],
    "btf": lambda obj: ["btf", "dump", obj],
    "diff": lambda obj: ["diff", obj, "--data", PACKET],    # fails before the kernel is used
}
SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bad_input")


def _section_span(data: bytes, name: str) -> tuple[int, int]:
    """(file offset, size) of section `name` of a little-endian ELF64 object."""
    from bpfsim.elf.reader import read_elf

    obj = read_elf(data)
    sec = obj.section(name)
    assert sec is not None, name
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    offset = struct.unpack_from("<Q", data, shoff + sec.index * 64 + 0x18)[0]
    return offset, sec.size


# A mutated max_entries can ask for a huge ARRAY or ring buffer.  The kernel preallocates and
# answers ENOMEM; the emulator creates array elements lazily, so `maps dump`/`run` then
# materialise every one of them (a 24 GB process was OOM-killed on this machine).  That is a
# resource limit of the emulator, reported, not the parser contract tested here: such
# examples are skipped, and a cap on the address space turns any other runaway allocation into
# a MemoryError (an "internal error" line, so the test fails) instead of the OOM killer.
MAX_MAP_BYTES = 1 << 24


def _sane_maps(data: bytes) -> bool:
    try:
        spec = bpfsim.load_spec(data)
    except BpfError:
        return True                      # refused before any map exists
    maps = [*spec.maps.values(), *(m.inner for m in spec.maps.values() if m.inner is not None)]
    return all(m.max_entries * max(m.value_size, 1) <= MAX_MAP_BYTES for m in maps)


@contextlib.contextmanager
def _address_space_cap(extra: int = 6 << 30):
    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = vm + extra if hard == resource.RLIM_INFINITY else min(vm + extra, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.fixture
def capped():
    with _address_space_cap():
        yield


def _expect_clean(res, *fragments: str) -> None:
    """Exit 0 or 1 (a mutation can leave a valid object), or the bad-input contract."""
    assert "Traceback" not in res.err and "internal error" not in res.err, (res.argv, res.err)
    if res.rc == 2:
        res.expect_bad_input(*fragments)
    else:
        assert res.rc in (0, 1), (res.argv, res.rc, res.err)


# -- files that are not BPF objects ---------------------------------------------------------------


@pytest.mark.parametrize("cmd", sorted(OBJ_COMMANDS))
def test_missing_file(bpfsim_cli, cmd) -> None:
    bpfsim_cli(*OBJ_COMMANDS[cmd]("/nonexistent/dir/prog.bpf.o")).expect_bad_input(
        "/nonexistent/dir/prog.bpf.o")


@pytest.mark.parametrize("cmd", sorted(OBJ_COMMANDS))
def test_directory(bpfsim_cli, cmd, tmp_path) -> None:
    bpfsim_cli(*OBJ_COMMANDS[cmd](tmp_path)).expect_bad_input(str(tmp_path), "directory")


@pytest.mark.parametrize("cmd", sorted(OBJ_COMMANDS))
def test_empty_file(bpfsim_cli, cmd, tmp_path) -> None:
    empty = tmp_path / "empty.bpf.o"
    empty.write_bytes(b"")
    bpfsim_cli(*OBJ_COMMANDS[cmd](empty)).expect_bad_input("not an ELF file")


@pytest.mark.parametrize("cmd", ["run", "verify", "maps", "diff"])
def test_device_is_refused_not_read_forever(bpfsim_cli, cmd) -> None:
    bpfsim_cli(*OBJ_COMMANDS[cmd]("/dev/zero")).expect_bad_input("/dev/zero", "not a regular file")


@pytest.mark.parametrize("cmd", sorted(OBJ_COMMANDS))
def test_non_bpf_elf(bpfsim_cli, cmd) -> None:
    true = Path("/bin/true").resolve()
    if not true.is_file():
        pytest.skip("no /bin/true")
    bpfsim_cli(*OBJ_COMMANDS[cmd](true)).expect_bad_input("not a BPF object")


@pytest.mark.parametrize("cmd", ["run", "verify", "maps", "diff"])
@pytest.mark.parametrize("obj", BAD_FIXTURES, ids=lambda p: p.name)
def test_refused_objects(bpfsim_cli, cmd, obj) -> None:
    """tests/fixtures/progs/bad: unknown section, bad license, legacy maps, ... (libbpf refuses
    each of them); the line names the loader stage."""
    line = bpfsim_cli(*OBJ_COMMANDS[cmd](obj)).expect_bad_input()
    assert line.startswith("bpfsim: error: load ") or line.startswith("bpfsim: error: link "), line


def test_unknown_section_names_it(bpfsim_cli) -> None:
    res = bpfsim_cli("run", REPO / "tests/fixtures/progs/bad/unknown_section.bpf.o", "--data", PACKET)
    res.expect_bad_input("unknown section 'not_a_hook'")


@SETTINGS
@given(data=st.binary(max_size=512), elf_magic=st.booleans(), cmd=st.sampled_from(sorted(OBJ_COMMANDS)))
def test_random_bytes(bpfsim_cli, scratch, capped, data: bytes, elf_magic: bool, cmd: str) -> None:
    path = scratch / "random.bpf.o"
    # past the magic: the 64-bit little-endian BPF relocatable header, then noise
    head = b"\x7fELF\x02\x01\x01" + bytes(9) + b"\x01\x00\xf7\x00" if elf_magic else b""
    path.write_bytes(head + data)
    res = bpfsim_cli(*OBJ_COMMANDS[cmd](path))
    res.expect_bad_input()


# -- real objects, mutated ------------------------------------------------------------------------

REAL = {p.name: p.read_bytes() for p in (TIMER, COUNTER, REPO / "tests/fixtures/btf/types.bpf.o",
                                         REPO / "tests/fixtures/runtime/helpers.bpf.o")}


@SETTINGS
@given(name=st.sampled_from(sorted(REAL)), cut=st.integers(0, 1 << 15),
       cmd=st.sampled_from(sorted(OBJ_COMMANDS)))
def test_truncated_object(bpfsim_cli, scratch, capped, name: str, cut: int, cmd: str) -> None:
    data = REAL[name]
    path = scratch / "truncated.bpf.o"
    path.write_bytes(data[: cut % len(data)])
    bpfsim_cli(*OBJ_COMMANDS[cmd](path)).expect_bad_input()


@SETTINGS
@given(name=st.sampled_from(sorted(REAL)),
       flips=st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), min_size=1, max_size=8),
       cmd=st.sampled_from(sorted(OBJ_COMMANDS)))
def test_mutated_object(bpfsim_cli, scratch, capped, name: str, flips, cmd: str) -> None:
    buf = bytearray(REAL[name])
    for pos, val in flips:
        buf[pos % len(buf)] = val
    assume(_sane_maps(bytes(buf)))
    path = scratch / "mutated.bpf.o"
    path.write_bytes(bytes(buf))
    _expect_clean(bpfsim_cli(*OBJ_COMMANDS[cmd](path)))


@SETTINGS
@given(section=st.sampled_from([".BTF", "cgroup_skb/egress", ".BTF.ext", ".maps", ".symtab"]),
       flips=st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), min_size=1, max_size=4),
       cmd=st.sampled_from(["run", "run-json", "verify", "maps", "btf", "disasm"]))
def test_mutated_section_of_the_timer_example(bpfsim_cli, scratch, capped, section: str, flips,
                                              cmd: str) -> None:
    """Aimed mutations: BTF (map value layout, the bpf_timer field), code, line info, map
    definitions and symbols of examples/timer/timer_nocancel.bpf.o."""
    data = REAL[TIMER.name]
    offset, size = _section_span(data, section)
    buf = bytearray(data)
    for pos, val in flips:
        buf[offset + pos % size] = val
    assume(_sane_maps(bytes(buf)))
    path = scratch / "aimed.bpf.o"
    path.write_bytes(bytes(buf))
    _expect_clean(bpfsim_cli(*OBJ_COMMANDS[cmd](path)))


@pytest.mark.parametrize("cmd", ["run", "verify", "maps", "btf"])
def test_malformed_btf_header(bpfsim_cli, tmp_path, cmd) -> None:
    data = bytearray(REAL[TIMER.name])
    offset, _ = _section_span(bytes(data), ".BTF")
    data[offset: offset + 2] = b"\x00\x00"             # the BTF magic
    path = tmp_path / "badbtf.bpf.o"
    path.write_bytes(bytes(data))
    bpfsim_cli(*OBJ_COMMANDS[cmd](path)).expect_bad_input("magic")


# -- bad arguments --------------------------------------------------------------------------------


@pytest.mark.parametrize("args, fragments", [
    (["run", TIMER, "--bogus"], ["No such option '--bogus'"]),
    (["run", TIMER, "--data", PACKET, "--repeat", "0"], ["--repeat", "0 is not in the range"]),
    (["run", TIMER, "--data", PACKET, "--repeat", "many"], ["--repeat", "'many' is not a valid integer"]),
    (["run", TIMER, "--data", PACKET, "--advance", "soon"], ["--advance", "bad duration 'soon'"]),
    (["run", TIMER, "--data", PACKET, "--advance", "-5s"], ["--advance"]),
    (["run", TIMER, "--data", PACKET, "--prog", "nosuch"], ["no program named 'nosuch'", "bpf_prog1"]),
    (["run", TIMER, "--data", "/nonexistent/packet.bin"], ["--data", "/nonexistent/packet.bin"]),
    (["run", TIMER, "--ctx", "/nonexistent/ctx.bin"], ["--ctx", "/nonexistent/ctx.bin"]),
    (["run", TIMER, "--data", "/dev/zero"], ["--data", "/dev/zero", "not a regular file"]),
    (["run", TIMER, "--data", "/"], ["--data", "is a directory"]),
    (["run", TIMER, "--data", PACKET, "--clock", "sundial"], ["--clock", "sundial"]),
    (["run", TIMER, "--data", PACKET, "--backend", "qemu"], ["--backend", "qemu"]),
    (["run"], ["Missing argument 'OBJ'"]),
    (["verify", TIMER, "--log-level", "7"], ["--log-level"]),
    (["verify", TIMER, "--prog", "nosuch"], ["--prog", "nosuch"]),
    (["diff", TIMER, "--prog", "nosuch"], ["--prog", "nosuch"]),
    (["maps", "dump", COUNTER, "--map", "nosuch"], ["--map", "nosuch", "proto_count"]),
    (["maps", "frobnicate"], ["No such command 'frobnicate'"]),
    (["disasm", TIMER, "--mcpu", "v9"], ["--mcpu"]),
    (["btf", "dump", "/nonexistent.o"], ["/nonexistent.o"]),
    (["conformance"], ["at least one .data file"]),
    (["conformance", "/nonexistent/x.data"], ["/nonexistent/x.data"]),
    (["bench", "--only", "nosuch", "--backend", "sim"], ["no benchmark named nosuch"]),
    (["bench", "--dir", "/nonexistent/bench"], ["no benchmark objects"]),
    (["frobnicate"], ["No such command 'frobnicate'"]),
])
def test_bad_arguments(bpfsim_cli, args, fragments) -> None:
    bpfsim_cli(*args).expect_bad_input(*fragments)


def test_run_input_refused_by_test_run(bpfsim_cli, tmp_path) -> None:
    # a 3-byte packet for an skb program: BPF_PROG_TEST_RUN's -EINVAL, as the kernel answers
    short = tmp_path / "short.bin"
    short.write_bytes(b"abc")
    bpfsim_cli("run", COUNTER, "--data", short).expect_bad_input("BPF_PROG_TEST_RUN", "errno 22")


@pytest.mark.parametrize("text, fragment", [
    (b"steps: [\n", "cannot parse"),
    (b"\x84\xff\x00garbage", "cannot parse"),
    (b"just a string\n", "non-empty list of steps"),
    (b"steps:\n  - frobnicate: 1\n", "unknown step 'frobnicate'"),
    (b"- run: {}\n- advance: soon\n", "bad duration 'soon'"),
])
def test_diff_bad_scenario_file(bpfsim_cli, tmp_path, text: bytes, fragment: str) -> None:
    scenario = tmp_path / "scenario.yaml"
    scenario.write_bytes(text)
    bpfsim_cli("diff", COUNTER, "--scenario", scenario).expect_bad_input(fragment)


@pytest.mark.kernel
@pytest.mark.parametrize("step", ["run: {prog: nosuch}", "pin_prog: {prog: nosuch, path: p}"])
def test_diff_scenario_naming_a_missing_program(bpfsim_cli, tmp_path, step: str) -> None:
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(f"steps:\n  - {step}\n")
    _expect_clean(bpfsim_cli("diff", COUNTER, "--scenario", scenario))


@pytest.mark.parametrize("path", ["/sys/fs/bpf/bpfsim-no-such-pin", "/sys/fs/bpf/no/such/dir/pin"])
def test_maps_dump_of_a_path_that_is_not_pinned(bpfsim_cli, path) -> None:
    # with bpf(2): ENOENT from BPF_OBJ_GET; without it (not root): the kernel's refusal
    bpfsim_cli("maps", "dump", path).expect_bad_input(path)


# -- the Python API -------------------------------------------------------------------------------


def _state(rt) -> tuple:
    """What a load can leave behind in a Runtime."""
    return (sorted(m.id for m in live_objects(rt, "map")), sorted(p.id for p in live_objects(rt, "prog")),
            sorted(rt.pins.pins()), len(rt.mem.regions()), len(rt._collections))


@pytest.mark.parametrize("key", [b"", b"\x00", b"\x00" * 3, b"\x00" * 5, b"\x00" * 8])
def test_wrong_key_size_names_the_expected_size(key: bytes) -> None:
    with bpfsim.Runtime() as rt, rt.load(COUNTER) as coll:
        m = coll.maps["proto_count"]
        m.raw[(6).to_bytes(4, "little")] = (41).to_bytes(8, "little")
        before = m.dump()
        for op in (lambda: m.raw[key], lambda: m.raw.__setitem__(key, bytes(8)),
                   lambda: m.raw.__delitem__(key), lambda: m.lookup(key), lambda: m.delete(key)):
            with pytest.raises(UsageError, match="key must be 4 bytes"):
                op()
        with pytest.raises(UsageError, match="value must be 8 bytes"):
            m.raw[(6).to_bytes(4, "little")] = b"\x01"
        assert m.dump() == before
        assert m[6] == 41


@pytest.mark.parametrize("bad", ["abcd", 4, None, 1.5, [0, 0, 0, 0]])
def test_raw_view_takes_only_bytes(bad) -> None:
    """`raw[4]` must not become the key 00000000 (bytes(4)), `raw["abcd"]` not a TypeError."""
    with bpfsim.Runtime() as rt, rt.load(COUNTER) as coll:
        m = coll.maps["proto_count"]
        m.raw[bytes(4)] = (9).to_bytes(8, "little")
        before = m.dump()
        for op in (lambda: m.raw[bad], lambda: m.raw.__setitem__(bad, bytes(8)),
                   lambda: m.raw.__setitem__(bytes(4), bad), lambda: m.raw.__delitem__(bad),
                   lambda: m.raw.update(bad, bytes(8))):
            with pytest.raises(UsageError, match="raw (key|value) must be bytes"):
                op()
        assert m.dump() == before


@pytest.mark.parametrize("clock", ["virtual", "real"])
@pytest.mark.parametrize("bad", ["1s", None, "soon"])
def test_clock_takes_nanoseconds(clock: str, bad) -> None:
    with bpfsim.Runtime(clock=clock) as rt:
        now = rt.clock.now()
        for op in (rt.clock.advance, rt.clock.advance_to):
            with pytest.raises(UsageError, match="takes nanoseconds"):
                op(bad)
        assert rt.clock.now() - now < bpfsim.s(1)


@pytest.mark.parametrize("fixture", sorted(p.name for p in (REPO / "tests/fixtures/verifier").glob("*.bpf.o")
                                           if p.name != "timer_ok.bpf.o"))
def test_failed_load_leaves_nothing(fixture: str) -> None:
    with bpfsim.Runtime() as rt:
        kept = rt.load(COUNTER)
        kept.maps["proto_count"][6] = 1
        before = _state(rt)
        with pytest.raises(BpfError):
            rt.load(REPO / "tests/fixtures/verifier" / fixture)
        assert _state(rt) == before
        assert kept.maps["proto_count"][6] == 1            # the earlier collection is intact
        rt.load(REPO / "tests/fixtures/verifier/timer_ok.bpf.o").close()   # and the runtime works


def test_failed_load_unpins_and_releases_pinned_maps() -> None:
    """globals.bpf.o pins `pinned_stats` (LIBBPF_PIN_BY_NAME); a program that fails after the
    maps exist must leave no pin, no map and no program behind."""
    spec = bpfsim.load_spec(REPO / "tests/fixtures/progs/globals.bpf.o")
    spec.programs["xdp_count"].references[0].target = "no_such_map"
    with bpfsim.Runtime() as rt:
        before = _state(rt)
        with pytest.raises(BpfError, match="no_such_map"):
            rt.load(spec)
        assert _state(rt) == before


def test_failed_load_at_the_pin_step_leaves_nothing() -> None:
    with bpfsim.Runtime() as rt:
        blocker = rt.load(COUNTER)
        blocker.maps["proto_count"].pin("/sys/fs/bpf/app")        # a file where a directory is needed
        before = _state(rt)
        with pytest.raises(BpfError):
            rt.load(REPO / "tests/fixtures/progs/globals.bpf.o", pin_root="/sys/fs/bpf/app")
        assert _state(rt) == before


def test_incompatible_pin_is_refused_without_side_effects() -> None:
    with bpfsim.Runtime() as rt:
        other = rt.load(COUNTER)
        other.maps["byte_count"].pin("/sys/fs/bpf/pinned_stats")   # wrong type for globals.bpf.o
        before = _state(rt)
        with pytest.raises(BpfError, match="couldn't reuse pinned map"):
            rt.load(REPO / "tests/fixtures/progs/globals.bpf.o")
        assert _state(rt) == before


def test_failed_top_level_load_leaves_no_runtime_threads() -> None:
    """`bpfsim.load(path, clock="real")` makes its own Runtime; a failed load must close it
    (the real clock runs one thread per CPU)."""
    import threading

    before = threading.active_count()
    for _ in range(3):
        with pytest.raises(VerifierError):
            bpfsim.load(REPO / "tests/fixtures/verifier/timer_on_stack.bpf.o", clock="real")
    assert threading.active_count() == before


def test_verifier_error_carries_the_kernel_line() -> None:
    with pytest.raises(VerifierError) as info:
        bpfsim.load(REPO / "tests/fixtures/verifier/timer_on_stack.bpf.o")
    assert info.value.message == "R1 type=fp expected=map_value"


def test_pinning_something_that_is_not_an_object() -> None:
    with bpfsim.Runtime() as rt:
        with pytest.raises(UsageError, match="not a map or program"):
            rt.pin_object("/sys/fs/bpf/x", "not a map")
        coll = rt.load(COUNTER)
        rt.pin_object("/sys/fs/bpf/counts", coll.maps["proto_count"])    # a handle is fine
        assert "/sys/fs/bpf/counts" in rt.pins.pins()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for bpf(2)")
@pytest.mark.kernel
def test_kernel_failed_load_leaves_no_pin(bpf_pin_dir) -> None:
    import bpfsim.kernel

    spec = bpfsim.load_spec(REPO / "tests/fixtures/progs/globals.bpf.o")
    spec.programs["xdp_count"].references[0].target = "no_such_map"
    with pytest.raises(BpfError):
        bpfsim.kernel.load(spec, pin_root=bpf_pin_dir)
    assert os.listdir(bpf_pin_dir) == []
