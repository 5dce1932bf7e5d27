"""What every ``nanomitter`` command shares: the ``--url`` option, building the emitter,
running the async part until done or signalled, and turning failures into exit codes.

Exit codes (docs/cli.md): 0 done (hub and sub also when stopped by SIGINT/SIGTERM), 1 a
runtime failure (the bus could not be joined, the address is in use), 2 a usage error
(click's convention), 128 + N when ``pub`` is stopped by signal N before it sent everything.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import anyio
import anyio.abc
import click
from rich.console import Console

from ..connect import URL_ENVIRONMENT_VARIABLE, connect, default_url
from ..core.emitter import DistributedEventEmitter
from ..core.errors import NanomitterError
from ..transports.registry import transport_class
from ..transports.url import BusURL, redact

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

OK, FAILED, USAGE = 0, 1, 2
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

stderr = Console(stderr=True, soft_wrap=True, highlight=False)
"""Status lines (styled only on a terminal; rich honours NO_COLOR)."""
stdout = Console(soft_wrap=True, highlight=False)
"""Human-readable output (styled only on a terminal)."""


class RuntimeFailure(click.ClickException):
    """The command was used right but could not do its job (exit 1)."""

    exit_code = FAILED


def url_option(command: F) -> F:
    """``--url``: every command's bus, defaulting to ``$NANOMITTER_URL`` then the seed's."""
    return click.option(
        "--url",
        metavar="URL",
        default=None,
        help=f"bus URL (default: ${URL_ENVIRONMENT_VARIABLE}, then tcp://127.0.0.1:55555); "
        "the scheme picks the transport: tcp:// ipc:// ws:// (nng), zmq+tcp:// zmq+ipc://, "
        "nats://",
    )(command)


def bus_url(url: str | None) -> str:
    """The URL to use: ``--url``, else ``$NANOMITTER_URL``, else the seed's default."""
    return url if url is not None else default_url()


def parse_url(url: str) -> BusURL:
    """Parse and check the scheme and option names now: mistakes are usage errors (exit 2)."""
    try:
        parsed = BusURL.parse(url)
        parsed.check_options(transport_class(parsed.scheme).options)
    except (ValueError, TypeError) as exc:
        raise click.UsageError(one_line(exc)) from None
    return parsed


def crosses_processes(url: BusURL) -> bool:
    return transport_class(url.scheme).capabilities.crosses_processes


def require_network_bus(url: BusURL, command: str) -> None:
    """A command runs in its own process: an in-process bus (memory://) would be its alone."""
    if not crosses_processes(url):
        raise click.UsageError(
            f"{url.scheme}:// is an in-process bus: '{command}' in its own process would be "
            "alone on it; use a network URL such as tcp://127.0.0.1:55555 or zmq+tcp://..."
        )


def open_bus(url: str, **settings: Any) -> DistributedEventEmitter:
    """Build (not open) the emitter; bad URLs and option values are usage errors (exit 2)."""
    try:
        return connect(url, **settings)
    except (ValueError, TypeError) as exc:
        raise click.UsageError(one_line(exc)) from None


def run(main: Callable[[], Awaitable[T]]) -> T:
    """Run the async part on asyncio (every transport runs there, NATS only there).

    Failures become one-line errors: problems with what the user gave are usage errors
    (exit 2), failures to reach or serve the bus are runtime failures (exit 1). Anything
    else is a bug and keeps its traceback.
    """
    try:
        return anyio.run(main, backend="asyncio")
    except BaseException as raised:
        exc = _leaf(raised)
        if isinstance(exc, click.ClickException):
            raise exc from None
        if isinstance(exc, NanomitterError) and isinstance(exc, ValueError | TypeError):
            raise click.UsageError(one_line(exc)) from None  # e.g. a bad TLS file, oversized data
        if isinstance(exc, ConnectionError | TimeoutError | OSError | NanomitterError):
            raise RuntimeFailure(one_line(exc)) from None
        raise


def _leaf(exc: BaseException) -> BaseException:
    """The one exception inside (possibly nested) exception groups, or ``exc`` itself."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def one_line(exc: BaseException | str) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


async def stop_on_signals(body: Callable[[], Awaitable[None]]) -> signal.Signals | None:
    """Run ``body``; return None when it finishes, or the signal (SIGINT, SIGTERM) that
    cancelled it. The handlers are in place before ``body`` starts, so a line that
    ``body`` prints to say it is ready also says that a signal now stops it cleanly."""
    stopped_by: list[signal.Signals] = []

    async def watch(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        with anyio.open_signal_receiver(*STOP_SIGNALS) as signals:
            task_status.started()
            async for signum in signals:
                stopped_by.append(signal.Signals(signum))
                group.cancel_scope.cancel()
                return

    async with anyio.create_task_group() as group:
        await group.start(watch)
        await body()
        group.cancel_scope.cancel()
    return stopped_by[0] if stopped_by else None


def clock(precise: bool = False) -> str:
    """Local wall-clock time for output lines: ``12:00:01`` (``12:00:01.234`` if precise)."""
    now = time.time()
    text = time.strftime("%H:%M:%S", time.localtime(now))
    return f"{text}.{int(now % 1 * 1000):03d}" if precise else text


def shown(url: str) -> str:
    """``url`` as it may be printed: credentials masked."""
    return redact(url)


def configure_logging() -> None:
    """The library's problem reports (bad frames, lost connections) as stderr lines."""
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


@contextmanager
def quiet_broken_pipe() -> Iterator[None]:
    """``nanomitter sub | head -3``: once the reader is gone, stop without a traceback."""
    try:
        yield
    except BrokenPipeError:
        _discard_stdout()
    else:
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            _discard_stdout()


def _discard_stdout() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush cannot fail
    os.close(devnull)
