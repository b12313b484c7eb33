"""The `.data` parser follows upstream's rules (FORMAT.md)."""

from __future__ import annotations

import pytest

from bpfsim.conformance.datafile import parse
from bpfsim.conformance.runner import run_case
from bpfsim.errors import ParseError


def test_sections_comments_and_directive_substrings() -> None:
    text = ("# Copyright\n# SPDX-License-Identifier: MIT\nignored before any directive\n"
            "-- asm   # trailing comment\r\n"
            "mov %r0, %r2 # comment\r\n"
            "\n"
            "exit\n"
            "--- mem ---\n"
            "aa bb\n"
            "cc\n"
            "-- result\n"
            "0x1\n"
            "0x0000000000000003\n"
            "-- no register offset\n"
            "call instruction\n"
            "-- c\n"
            "#include <x.h>\n"
            "int main() { return 0; }\n")
    case = parse(text, "t.data")
    assert case.asm == ["mov %r0, %r2", "exit"]
    assert case.mem == b"\xaa\xbb\xcc"
    assert case.result == 3           # the last line counts
    assert case.skip is None
    assert run_case(case).ok


def test_raw_overrides_asm() -> None:
    case = parse("-- asm\nmov %r0, 1\nexit\n-- raw\n0x00000002000000b7\n149\n-- result\n0x2\n")
    assert [i.opcode for i in case.program()] == [0xB7, 0x95]
    assert run_case(case).ok


def test_result_is_a_full_64_bit_value() -> None:
    case = parse("-- asm\nlddw %r0, 0x100000002\nexit\n-- result\n0x2\n")
    result = run_case(case)
    assert not result.ok and result.got == 0x100000002
    assert parse("-- asm\nexit\n-- result\n18446744073709551615\n").result == (1 << 64) - 1
    assert parse("-- asm\nexit\n-- result\n0xFFFFFFF6\n").result == 0xFFFFFFF6


def test_unknown_directive_and_missing_result_skip() -> None:
    assert parse("-- asm\nexit\n-- frobnicate\n-- result\n0\n").skip
    assert parse("-- asm\nexit\n").skip


def test_error_section() -> None:
    case = parse("-- asm\nldxw %r0, [%r1]\nexit\n-- error\nsomething else\n")
    assert case.error == "something else"
    assert not run_case(case).ok


def test_bad_numbers_are_parse_errors() -> None:
    with pytest.raises(ParseError):
        parse("-- asm\nexit\n-- result\n0xzz\n")
    with pytest.raises(ParseError):
        parse("-- asm\nexit\n-- mem\n1ff\n-- result\n0\n")
