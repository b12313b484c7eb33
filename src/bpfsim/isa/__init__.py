"""The eBPF instruction set: pure knowledge about 8-byte instructions, nothing about ELF,
maps or helpers.

* `isa.insn`      — `Instruction`, `decode_slots`, `encode_slots`, `lddw_pair` (bits only)
* `isa.opcodes`   — `OPCODES`, the one table of instruction forms; `lookup`, `candidates`
* `isa.validate`  — `validate(insns)`, `decode_program(data)`: structural checks, ParseError
* `isa.asm`       — `assemble(text)`: bpf_conformance and llvm-objdump dialects
* `isa.disasm`    — `format_insn`, `format_program`, `listing`: llvm-objdump-19 `-d` text
"""
