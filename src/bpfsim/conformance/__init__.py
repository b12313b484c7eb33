"""The bpf_conformance suite: `.data` files (`datafile`), running them (`runner`), and the
upstream plugin protocol (`plugin`).  Uses the public layers below (isa, vm); used by `cli`."""

from bpfsim.conformance.datafile import DataFile, load, parse
from bpfsim.conformance.runner import TestResult, run_case, run_file, run_paths, run_program

__all__ = ["DataFile", "TestResult", "load", "parse", "run_case", "run_file", "run_paths", "run_program"]
