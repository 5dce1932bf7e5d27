"""The ``nanomitter`` command: ``hub``, ``sub``, ``pub``, ``demo`` and ``bench``.

Each command lives in its own module, imported only when it runs (or when ``--help``
lists them), so ``nanomitter sub`` does not pay for what ``bench`` imports. Errors are one
line on stderr, never a traceback; exit codes are documented in docs/cli.md.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

import click

from .. import __version__
from .common import USAGE, configure_logging, one_line, stderr

COMMANDS = {
    "hub": "nanomitter.cli.hub:hub",
    "sub": "nanomitter.cli.pubsub:sub",
    "pub": "nanomitter.cli.pubsub:pub",
    "demo": "nanomitter.cli.demo:demo",
    "bench": "nanomitter.cli.bench:bench",
}
"""name -> ``module:attribute`` of its click command."""
INTERRUPTED = 130
"""Exit code after Ctrl-C outside a command's own signal handling (128 + SIGINT)."""


class LazyGroup(click.Group):
    """A group whose commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if self.get_command(ctx, name) is not None]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, _, attribute = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # not installed in this version (e.g. bench)
                return None
            raise
        command = getattr(module, attribute)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nanomitter")
def cli() -> None:
    """nanomitter: a distributed EventEmitter on the command line.

    Every command takes --url (default: $NANOMITTER_URL, then tcp://127.0.0.1:55555).
    'nanomitter COMMAND --help' tells more.
    """


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """The console script: run a command, exit with its code, errors as one line."""
    configure_logging()
    try:
        code = cli.main(args=argv, prog_name="nanomitter", standalone_mode=False)
    except click.UsageError as exc:
        if _shows_help(exc):
            exc.show()
        else:
            where = exc.ctx.command_path if exc.ctx is not None else "nanomitter"
            _error(f"{one_line(exc.format_message())} (see '{where} --help')")
        code = USAGE
    except click.ClickException as exc:
        _error(one_line(exc.format_message()))
        code = exc.exit_code
    except (click.Abort, KeyboardInterrupt):
        code = INTERRUPTED
    sys.exit(code if isinstance(code, int) else 0)


def _shows_help(exc: click.UsageError) -> bool:
    """``nanomitter`` alone (click >= 8.2 raises this to print the help)."""
    return type(exc).__name__ == "NoArgsIsHelpError"


def _error(message: str) -> None:
    stderr.print(f"Error: {message}", style="red", markup=False)


__all__ = ["cli", "main"]
