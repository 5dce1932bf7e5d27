"""Emitters in separate processes, for checking transports that cross processes.

``async with spawn_peer(url) as peer:`` starts ``python -m nanomitter.conformance.peer`` on
``url`` and waits for its ready handshake; ``peer.listen``/``emit``/``wait``/``report``
(and, for request/reply, ``peer.respond``/``unrespond``/``ask``) drive it over JSON lines.
However the block ends, the process is closed (politely on success, killed on failure) and
reaped, so no child outlives a test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from typing import IO, Any

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream

from ..transports.registry import transport_class
from ..transports.url import BusURL, redact
from .harness import SYNC_TOPIC, current_backend, current_deadline

MAX_LINE = 16 * 1024 * 1024
CLOSE_GRACE = 5.0
"""Seconds a peer gets to close politely before it is killed."""


class PeerError(RuntimeError):
    """A peer process failed to start, died, timed out or refused a command.

    The message ends with the tail of the peer's stderr.
    """


class Peer:
    """A running peer process: one emitter on the bus, answering commands in order."""

    def __init__(
        self,
        name: str,
        process: anyio.abc.Process,
        stderr: IO[bytes],
    ) -> None:
        self.name = name
        self.process = process
        self.id = ""
        self._stderr = stderr
        assert process.stdout is not None
        self._stdout = BufferedByteReceiveStream(process.stdout)
        self._broken = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def stderr_tail(self, limit: int = 4000) -> str:
        """The last ``limit`` characters the peer wrote to stderr (its logs, a traceback)."""
        self._stderr.flush()
        self._stderr.seek(0)
        text = self._stderr.read().decode(errors="replace")
        return text[-limit:]

    def _failure(self, what: str) -> PeerError:
        self._broken = True
        tail = self.stderr_tail().strip()
        code = self.process.returncode
        status = "" if code is None else f" (exit status {code})"
        return PeerError(
            f"peer {self.name} (pid {self.pid}) {what}{status}"
            + (f"; its stderr ends:\n{tail}" if tail else "; its stderr is empty")
        )

    async def _read(self, what: str, seconds: float) -> dict[str, Any]:
        line = b""
        with anyio.move_on_after(seconds) as scope:
            try:
                line = await self._stdout.receive_until(b"\n", MAX_LINE)
            except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError):
                raise self._failure(f"exited before answering {what}") from None
        if scope.cancelled_caught:
            raise self._failure(f"did not answer {what} within {seconds:g} s")
        try:
            message = json.loads(line)
        except ValueError:
            raise self._failure(
                f"answered {what} with something not JSON: {line[:200]!r}"
            ) from None
        if not isinstance(message, dict):
            raise self._failure(f"answered {what} with {message!r}")
        return message

    async def request(
        self, cmd: str, *, answer_within: float | None = None, **fields: Any
    ) -> dict[str, Any]:
        """Send one command and return the peer's reply; :class:`PeerError` if it fails.

        The reply must come within ``answer_within`` seconds (default: the suite's deadline).
        """
        if self._broken:
            raise PeerError(f"peer {self.name} is no longer usable after an earlier failure")
        stdin = self.process.stdin
        assert stdin is not None
        try:
            await stdin.send((json.dumps({"cmd": cmd, **fields}) + "\n").encode())
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            raise self._failure(f"stopped reading commands (sending {cmd!r})") from None
        seconds = answer_within if answer_within is not None else current_deadline()
        reply = await self._read(repr(cmd), seconds)
        if "error" in reply:
            raise PeerError(f"peer {self.name} failed {cmd!r}: {reply['error']}")
        return reply

    async def listen(self, pattern: str) -> None:
        """Start counting events that match ``pattern`` (before anyone sends them)."""
        await self.request("listen", pattern=pattern)

    async def emit(self, topic: str, count: int, *, start: int = 1) -> None:
        """Emit :func:`~.traffic.numbered` ``(name, n)`` for ``n`` in ``start .. start+count-1``."""
        await self.request("emit", topic=topic, count=count, start=start)

    async def wait(
        self, pattern: str, count: int, *, within: float, include_own: bool = False
    ) -> int:
        """Wait (in the peer, up to ``within`` seconds) until ``pattern``'s listener has
        ``count`` events from others (from anyone with ``include_own``); return how many it
        has, fewer if time ran out."""
        reply = await self.request(
            "wait",
            pattern=pattern,
            count=count,
            timeout=within,
            include_own=include_own,
            answer_within=within + CLOSE_GRACE,
        )
        return int(reply["received"])

    async def ping(self, topic: str = SYNC_TOPIC) -> set[str]:
        """Emit a probe on ``topic``; return the sender ids whose probes on it the peer heard.

        Probe on a topic your listeners' patterns match: the probe listener is registered on
        the first ping, after them, so hearing anything proves their interest reached the bus.
        """
        reply = await self.request("ping", topic=topic)
        return set(reply["heard"])

    async def respond(self, topic: str, *, mode: str = "echo") -> None:
        """Answer requests and surveys on ``topic`` (a topic or pattern) in the peer: with
        ``{"pid", "node", "echo": <request data>}`` (``mode="echo"``), or by raising
        ``RuntimeError`` (``mode="raise"``). Returns once the responder's interest is in force
        on the bus; other nodes learn of it from the peer's presence heartbeat."""
        await self.request("respond", topic=topic, mode=mode)

    async def unrespond(self, topic: str) -> bool:
        """Remove the peer's responder on ``topic``; return whether it had one."""
        reply = await self.request("unrespond", topic=topic)
        return bool(reply["ok"])

    async def ask(
        self,
        topic: str,
        data: Any = None,
        *,
        timeout: float = 1.0,  # noqa: ASYNC109 (the peer's request timeout)
    ) -> dict[str, Any]:
        """Make the peer call ``bus.request(topic, data, timeout=timeout)``.

        Returns ``{"ok": True, "reply": ...}``, or ``{"ok": False, "raised": {"type",
        "message", "responder"}}`` when the request raised in the peer.
        """
        return await self.request(
            "request",
            topic=topic,
            data=data,
            timeout=timeout,
            answer_within=timeout + current_deadline(),
        )

    async def report(self) -> dict[str, Any]:
        """``{"id", "listeners": {pattern: {received, own, duplicates, ...}}, "stats"}``."""
        return await self.request("report")

    async def close(self) -> dict[str, Any]:
        """Ask the peer to close its emitter and exit; returns its final stats."""
        reply = await self.request("close", answer_within=CLOSE_GRACE)
        self._broken = True  # nothing more to say
        stats: dict[str, Any] = reply["stats"]
        return stats

    def __repr__(self) -> str:
        return f"<Peer {self.name} pid={self.pid} id={self.id or '?'}>"


@asynccontextmanager
async def spawn_peer(
    url: str,
    *,
    name: str = "peer",
    echo: bool = True,
    backend: str | None = None,
    imports: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    python: str | None = None,
    startup_timeout: float | None = None,
    heartbeat_interval: float | None = None,
) -> AsyncIterator[Peer]:
    """Run an emitter on ``url`` in a new Python process for the duration of the block.

    The child finds what the caller can: it gets the caller's ``sys.path`` (unless ``env``
    sets ``PYTHONPATH``) and the caller's registration of the URL's scheme, so a transport
    registered at runtime with ``nanomitter.transports.register`` works there too (if its
    class lives in an importable module). ``imports`` are further modules the child imports
    first; ``env`` adds environment variables; ``backend`` defaults to the caller's;
    ``heartbeat_interval`` sets the peer's presence heartbeats (default 60 s). The URL
    travels in ``$NANOMITTER_URL``, not on the command line. The child is always reaped:
    closed politely when the block succeeds, killed when it raises or is cancelled.
    """
    command = [
        python or sys.executable,
        "-m",
        "nanomitter.conformance.peer",
        "--name",
        name,
        "--echo" if echo else "--no-echo",
        "--backend",
        backend or current_backend(),
    ]
    if heartbeat_interval is not None:
        command += ["--heartbeat-interval", repr(float(heartbeat_interval))]
    for module in imports:
        command += ["--import", module]
    command += _forwarded_registration(url)
    environment = {
        **os.environ,
        "PYTHONPATH": _parent_path(),
        **(env or {}),
        "NANOMITTER_URL": url,
    }
    with tempfile.TemporaryFile() as stderr:
        process: anyio.abc.Process | None = None
        polite = False
        try:
            process = await anyio.open_process(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=environment,
            )
            peer = Peer(name, process, stderr)
            ready = await peer._read(
                f"the ready handshake on {redact(url)}",
                startup_timeout if startup_timeout is not None else current_deadline(),
            )
            if not ready.get("ready"):
                raise peer._failure(f"could not join {redact(url)}: {ready.get('error', ready)}")
            peer.id = str(ready["id"])
            yield peer
            polite = True
        finally:
            if process is not None:
                with anyio.CancelScope(shield=True):
                    await _reap(process, peer if polite else None)


def _forwarded_registration(url: str) -> list[str]:
    """``--register scheme=module:Class`` for the class this process uses for ``url``."""
    try:
        scheme = BusURL.parse(url).scheme
        cls = transport_class(scheme)
    except (ValueError, TypeError, ImportError):
        return []  # let the child report it
    if cls.__module__ == "__main__" or "." in cls.__qualname__:
        return []  # not importable as module:Class (a script, a nested or local class)
    return ["--register", f"{scheme}={cls.__module__}:{cls.__qualname__}"]


def _parent_path() -> str:
    return os.pathsep.join(entry for entry in sys.path if entry and os.path.isdir(entry))


async def _reap(process: anyio.abc.Process, polite: Peer | None) -> None:
    """Close the peer politely if asked and it is healthy, else kill it; always wait for it."""
    if polite is not None and process.returncode is None and not polite._broken:
        with anyio.move_on_after(CLOSE_GRACE), suppress(PeerError):
            await polite.close()
            await process.wait()
    if process.returncode is None:
        with suppress(ProcessLookupError):
            process.kill()
    await process.aclose()


__all__ = ["CLOSE_GRACE", "Peer", "PeerError", "spawn_peer"]
