"""Helpers shared by the tests: free ports, child processes and their output, a recorder."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
from anyio.streams.text import TextReceiveStream

from conftest import skip_or_fail


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (never the default 55555)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


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

    async def wait_until(self, predicate: Any, timeout: float = 20) -> None:
        with anyio.fail_after(timeout):
            while not predicate():
                await self._changed.wait()
