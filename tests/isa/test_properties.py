"""Property tests: random valid instructions of every form survive encode/decode (both byte
orders), disassembly/assembly in both dialects, and validation; random text given to the
assembler raises nothing but ParseError."""

from __future__ import annotations

import contextlib
import random

from hypothesis import given, settings
from hypothesis import strategies as st
from isa_forms import random_insn

from bpfsim.errors import ParseError
from bpfsim.isa.asm import assemble
from bpfsim.isa.disasm import format_insn, format_program
from bpfsim.isa.insn import Instruction, decode_slots, encode_slots, lddw_pair
from bpfsim.isa.opcodes import OPCODES
from bpfsim.isa.validate import validate

EXIT = Instruction(0x95)


_SUB = [Instruction(0xB7), EXIT]  # a subprogram: r0 = 0; exit


@st.composite
def programs(draw: st.DrawFn) -> list[Instruction]:
    """A valid program: random rows with random operands and a closing exit, then one
    subprogram that every local call and `lddw func` targets; jump targets stay inside the
    main part and off lddw tails."""
    rows = draw(st.lists(st.sampled_from(OPCODES), min_size=1, max_size=12))
    rng = random.Random(draw(st.integers(0, 2**32)))
    n = sum(2 if s.is_lddw else 1 for s in rows) + 1
    tails = set()
    pc = 0
    for s in rows:
        if s.is_lddw:
            tails.add(pc + 1)
        pc += 2 if s.is_lddw else 1
    out: list[Instruction] = []
    for s in rows:
        while True:
            slots = random_insn(s, rng, pc=len(out), n=n)
            if s.name in ("call local", "lddw_func"):  # -> the subprogram at slot n
                rel = n - (len(out) + 1)
                slots = ([Instruction(0x85, 0, 1, 0, rel)] if s.name == "call local"
                         else lddw_pair(slots[0].dst, 4, rel & 0xFFFFFFFF))
                break
            jf = s.jump_field
            if jf is None:
                break
            rel = slots[0].off if jf == "off" else slots[0].imm
            if len(out) + 1 + rel not in tails:
                break
        out += slots
    return [*out, EXIT, *_SUB]


@settings(max_examples=300, deadline=None)
@given(programs())
def test_encode_decode_round_trip(prog):
    validate(prog)
    for order in ("little", "big"):
        assert decode_slots(encode_slots(prog, order), order) == prog


@settings(max_examples=300, deadline=None)
@given(programs(), st.booleans())
def test_disasm_asm_round_trip(prog, labels):
    for dialect in ("llvm", "conformance"):
        text = format_program(prog, dialect=dialect, labels=labels)
        assert encode_slots(assemble(text)) == encode_slots(prog), text
        assert encode_slots(assemble(text, dialect=dialect)) == encode_slots(prog), text


@settings(max_examples=300, deadline=None)
@given(programs())
def test_llvm_text_never_raises(prog):
    for ins in prog:
        if not ins.lddw_tail:
            assert format_insn(ins)
            assert format_insn(ins, alu32=True)


_TOKENS = st.sampled_from(["r1", "w2", "%r3", "=", "+=", "*(u32 *)", "(", ")", "[", "]", "+", "-",
                           "0x10", "5", "-7", "goto", "if", "lock", "call", "local", "ll", "mov",
                           "lddw", "exit", ",", ":", "L1", "#", "\n", " ", "ja", "be16", "s>"])


@settings(max_examples=500, deadline=None)
@given(st.lists(_TOKENS, max_size=20).map(" ".join) | st.text(max_size=40))
def test_assembler_raises_only_parse_error(text):
    with contextlib.suppress(ParseError):
        assemble(text)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80), st.booleans(), st.sampled_from(["little", "big"]))
def test_listing_of_any_bytes_never_raises(data, alu32, order):
    """llvm-objdump prints whatever is there; so do we (undefined slots as <unknown>)."""
    from bpfsim.isa.disasm import SectionCode, listing

    out = listing("x.o", [SectionCode(".text", data, {0: ["f"]})], alu32=alu32, byteorder=order,
                  show_relocs=True)
    assert out.startswith("\nx.o:\tfile format elf64-bpf\n")
