"""The `bpfsim` command: a click group whose subcommands live one per module (`cmd_<name>.py`).

Job: dispatch, and the error contract: any `BpfError` (or bad usage) becomes one clear line on
stderr and exit 2; a checked thing that failed (rejected, differed, test failed) exits 1.
Subcommands use the public API only.
"""

from __future__ import annotations

import importlib
import sys

import click

from bpfsim.errors import BpfError

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
    """Entry point: never lets a traceback reach the user for an expected error."""
    try:
        cli.main(args=argv, prog_name="bpfsim", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("bpfsim: aborted", err=True)
        return 2
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return 2
    except BpfError as exc:
        click.echo(f"bpfsim: error: {exc}", err=True)
        return 2
    except FileNotFoundError as exc:
        click.echo(f"bpfsim: error: {exc.filename or exc}: no such file", err=True)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def exit_with(code: int) -> None:
    """Subcommands call this to end with a checked-failure code (1) without a message."""
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
