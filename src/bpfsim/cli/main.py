"""The `bpfsim` command: a click group whose subcommands live one per module (`cmd_<name>.py`).

Job: dispatch, and the error contract: any `BpfError` (or bad usage) becomes one clear line on
stderr and exit 2; a checked thing that failed (rejected, differed, test failed) exits 1.
Subcommands use the public API only.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from bpfsim.errors import BpfError, VerifierError

# name -> module under bpfsim.cli that defines a click command called `command`
SUBCOMMANDS = {
    "run": "cmd_run",
    "verify": "cmd_verify",
    "diff": "cmd_diff",
    "conformance": "cmd_conformance",
    "disasm": "cmd_disasm",
    "maps": "cmd_maps",
    "btf": "cmd_btf",
    "bench": "cmd_bench",
}


# click >= 8.2 raises this for a group called without a subcommand (8.1 printed help, exit 0)
_NO_ARGS_IS_HELP: type[Exception] = getattr(click.exceptions, "NoArgsIsHelpError",
                                            type("_Never", (Exception,), {}))


class LazyGroup(click.Group):
    """Imports a subcommand's module only when it is used, so `bpfsim --help` stays fast and a
    broken or missing subcommand cannot take the others down."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module_name = SUBCOMMANDS.get(cmd_name)
        if module_name is None:
            return None
        try:
            module = importlib.import_module(f"bpfsim.cli.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"bpfsim.cli.{module_name}":
                return None
            raise
        return module.command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bpfsim")
def cli() -> None:
    """Run eBPF programs with the Linux kernel's semantics, in Python."""


def main(argv: list[str] | None = None) -> int:
    """Entry point: never lets a traceback reach the user for an expected error.

    Returns the exit code; a subcommand's checked failure (`exit_with(1)`) leaves as SystemExit.
    Every error is exactly one line on stderr (`one_line`), so scripts can show it as is.
    """
    try:
        cli.main(args=argv, prog_name="bpfsim", standalone_mode=False)
    except click.exceptions.Abort as exc:
        if isinstance(exc.__cause__, KeyboardInterrupt):   # click turns Ctrl-C into Abort
            click.echo("bpfsim: interrupted", err=True)
            return 130
        click.echo("bpfsim: aborted", err=True)
        return 2
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except _NO_ARGS_IS_HELP as exc:  # `bpfsim`, `bpfsim maps`: the help, then why it failed
        click.echo(exc.ctx.get_help())
        click.echo(f"{exc.ctx.command_path}: error: missing command", err=True)
        return 2
    except click.ClickException as exc:
        # click's own form is "Usage: ...", "Try ... --help", "", "Error: ..." (four lines)
        ctx = getattr(exc, "ctx", None)
        where = ctx.command_path if ctx is not None else "bpfsim"
        click.echo(f"{where}: error: {one_line(exc.format_message())}", err=True)
        return 2
    except BpfError as exc:
        click.echo(f"bpfsim: error: {one_line(describe(exc))}", err=True)
        return 2
    except FileNotFoundError as exc:
        click.echo(f"bpfsim: error: {exc.filename or exc}: no such file", err=True)
        return 2
    except OSError as exc:  # a directory, no permission, an I/O error: bad input, not a bug
        click.echo(f"bpfsim: error: {exc.filename or ''}{': ' if exc.filename else ''}"
                   f"{exc.strerror or exc}", err=True)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug in bpfsim: still one line, the traceback on request
        if os.environ.get("BPFSIM_TRACEBACK"):
            raise
        click.echo(f"bpfsim: internal error (a bug in bpfsim; BPFSIM_TRACEBACK=1 shows where): "
                   f"{type(exc).__name__}: {one_line(str(exc))}", err=True)
        return 2
    return 0


def describe(exc: BpfError) -> str:
    """The message of a BpfError for one line: a verifier rejection gives the kernel's error
    line (`VerifierError.message`) and the program, not the five-line log tail of `str()`."""
    if isinstance(exc, VerifierError):
        who = f" program {exc.program}" if exc.program else ""
        at = f" (insn {exc.pc})" if exc.pc is not None else ""
        return f"verifier rejected{who}: {exc.message}{at}"
    return str(exc)


def one_line(text: str) -> str:
    """Join the lines of a message so stderr gets exactly one line."""
    return "; ".join(part.strip() for part in str(text).splitlines() if part.strip()) or "(no message)"


def exit_with(code: int) -> None:
    """Subcommands call this to end with a checked-failure code (1) without a message."""
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
