"""Helpers shared by the tests: free ports, child processes and their output, a recorder."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
from anyio.streams.text import TextReceiveStream

from peer_policy import skip_or_fail


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (never the default 55555)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


BACKENDS = ("asyncio", "trio")


def variants_on_backends(main: str, others: Sequence[str]) -> list[tuple[str, str]]:
    """``(variant, anyio_backend)`` pairs: ``main`` on both backends, each other variant on one.

    For ``@pytest.mark.parametrize(("scheme", "anyio_backend"), ...)``. The backend reaches a
    transport through anyio alone, the same code for each of its schemes or codecs; running
    every variant on both backends would prove the same thing twice.
    """
    pairs = [(main, backend) for backend in BACKENDS]
    pairs += [(other, BACKENDS[(i + 1) % 2]) for i, other in enumerate(others)]
    return pairs


def require_binary(name: str, package: str) -> str:
    """The path of ``name``; skip (or fail under NANOMITTER_REQUIRE_PEERS=1) when missing."""
    path = shutil.which(name)
    if path is None:
        skip_or_fail(f"{name} not found (Debian package {package}; .ci/run installs it)")
    assert path is not None
    return path


class Output:
    """Lines a child process printed, with a way to wait for one (no sleeps)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._changed = anyio.Event()

    def add(self, line: str) -> None:
        self.lines.append(line)
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, predicate: Callable[[str], bool], timeout: float = 20) -> str:
        with anyio.fail_after(timeout):
            checked = 0
            while True:
                for line in self.lines[checked:]:
                    if predicate(line):
                        return line
                checked = len(self.lines)
                await self._changed.wait()


async def _pump(stream: anyio.abc.ByteReceiveStream, output: Output) -> None:
    buffer = ""
    async for chunk in TextReceiveStream(stream, errors="replace"):
        buffer += chunk
        *complete, buffer = buffer.split("\n")
        for line in complete:
            output.add(line)
    if buffer:
        output.add(buffer)


@asynccontextmanager
async def running(
    command: Sequence[str], *, stdin: bool = False
) -> AsyncIterator[tuple[anyio.abc.Process, Output]]:
    """Run ``command``; collect its stdout+stderr lines; kill and reap it on exit."""
    output = Output()
    process = await anyio.open_process(
        list(command),
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        async with anyio.create_task_group() as tg:
            assert process.stdout is not None
            tg.start_soon(_pump, process.stdout, output)
            try:
                yield process, output
            finally:
                if process.returncode is None:
                    process.kill()
                with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                    await process.wait()
                tg.cancel_scope.cancel()
    finally:
        await process.aclose()


class Recorder:
    """Records events (or problems, as an error hook) and waits for a count without sleeping."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self._changed = anyio.Event()

    def __call__(self, event: Any) -> None:
        self.events.append(event)
        self._changed.set()
        self._changed = anyio.Event()

    async def wait(self, count: int, timeout: float = 20) -> list[Any]:
        with anyio.fail_after(timeout):
            while len(self.events) < count:
                await self._changed.wait()
        return self.events

    @property
    def data(self) -> list[Any]:
        return [event.data for event in self.events]

    async def wait_until(self, predicate: Any, timeout: float = 20) -> None:
        with anyio.fail_after(timeout):
            while not predicate():
                await self._changed.wait()


HUB_SCRIPT = Path(__file__).with_name("bus_hub.py")


class HubProcess:
    """A hub (``tests/bus_hub.py``) in its own process that a test can SIGKILL and start again
    at the same address: the restart_hub hook of conformance rule 8."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(HUB_SCRIPT), self.url], stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if line.strip() != "ready":
            self.kill()
            raise AssertionError(f"the hub did not start (said {line!r})")

    def kill(self) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
        if process is not None and process.stdout is not None:
            process.stdout.close()

    async def restart(self, url: str) -> None:
        await anyio.to_thread.run_sync(self.kill)
        await anyio.to_thread.run_sync(self.start)
