"""``python -m nanomitter.conformance.peer [URL]``: one emitter in a process of its own.

The conformance suite starts it through :func:`nanomitter.conformance.processes.spawn_peer`
to check transports that cross processes. It connects to ``URL`` (default
``$NANOMITTER_URL``, which is how ``spawn_peer`` passes it, so credentials stay out of
process listings) and speaks JSON lines: one command per line on stdin, one reply per line
on stdout, in order. Logging goes to stderr. ``--import MODULE`` and
``--register SCHEME=MODULE:CLASS`` make transports registered at runtime available.

First line out: ``{"ready": true, "id": <sender id>, "pid": ..., "name": ...}`` or
``{"ready": false, "error": "..."}``. Commands (every reply has ``"ok"``; failures carry
``"error"``):

- ``{"cmd": "listen", "pattern": P}``: count events matching ``P`` (per sender, with
  duplicates and out-of-order arrivals of ``data["n"]``).
- ``{"cmd": "emit", "topic": T, "count": N, "start": 1}``: emit ``numbered(name, n)``
  for ``n`` in ``start .. start+N-1``; replies once all were emitted.
- ``{"cmd": "wait", "pattern": P, "count": N, "timeout": S, "include_own": false}``: wait
  until ``P``'s listener has ``N`` events (from others unless ``include_own``); replies
  ``{"ok": <reached>, "received": k}``.
- ``{"cmd": "ping", "topic": T}``: emit a probe on ``T`` (default the suite's handshake
  topic); reply ``{"heard": [ids]}``, the senders whose probes on ``T`` this peer has heard.
  The first ping on ``T`` registers the probe listener, so a probe heard proves every
  pattern listened to before it is active on the bus. Probes are not counted by ``listen``.
- ``{"cmd": "respond", "topic": T, "mode": "echo"}``: answer requests and surveys on ``T``
  (a topic or pattern) with ``{"pid": <this process>, "node": name, "echo": <request
  data>}``; ``"mode": "raise"`` raises ``RuntimeError`` instead (the requester gets a
  ``RemoteError``). Replies once the responder's interest is in force on the bus.
- ``{"cmd": "unrespond", "topic": T}``: remove that responder; ``{"ok": <there was one>}``.
- ``{"cmd": "request", "topic": T, "data": D, "timeout": S}``: ``bus.request(T, D)``; reply
  ``{"ok": true, "reply": ...}``, or ``{"ok": false, "raised": {"type", "message",
  "responder"}}`` when the request raised (``RemoteError``, ``NoResponders``,
  ``RequestTimeout``, ...).
- ``{"cmd": "report"}``: ``{"id", "listeners": {P: {...}}, "stats": {...}}``.
- ``{"cmd": "close"}``: close the emitter, reply with final stats, exit 0. End of input
  does the same without a reply.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Callable, Container, Sequence
from typing import Any

import anyio
import anyio.to_thread
import msgspec

from ..connect import connect
from ..core.emitter import DistributedEventEmitter
from ..core.event import DistributedEvent
from ..transports.registry import register
from .harness import SYNC_TOPIC, Signal
from .traffic import corruption, numbered

RESPONDER_MODES = ("echo", "raise")


class Tally:
    """Counts what one listener got, per sender, noticing duplicates and reordering."""

    def __init__(self, me: str, signal: Signal, ignored: Container[str]) -> None:
        self.me = me
        self.signal = signal
        self.ignored = ignored
        self.received = 0
        self.own = 0
        self.duplicates = 0
        self.out_of_order = 0
        self.corrupted = 0
        self.first_corrupted = ""
        self.senders: dict[str, int] = {}
        self._last: dict[str, int] = {}
        self._seen: dict[str, set[int]] = {}

    def __call__(self, event: DistributedEvent) -> None:
        if event.topic in self.ignored:
            return
        sender = event.sender
        self.received += 1
        if sender == self.me:
            self.own += 1
        self.senders[sender] = self.senders.get(sender, 0) + 1
        data = event.data
        n = data.get("n") if isinstance(data, dict) else None
        wrong = corruption(data, str(data.get("node"))) if isinstance(data, dict) else None
        if wrong is not None:
            self.corrupted += 1
            self.first_corrupted = self.first_corrupted or f"{event.topic!r} #{n}: {wrong}"
        if type(n) is int:
            seen = self._seen.setdefault(sender, set())
            if n in seen:
                self.duplicates += 1
            elif n < self._last.get(sender, 0):
                self.out_of_order += 1
            seen.add(n)
            self._last[sender] = max(n, self._last.get(sender, 0))
        self.signal.pulse()

    def from_others(self) -> int:
        return self.received - self.own

    def report(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "own": self.own,
            "duplicates": self.duplicates,
            "out_of_order": self.out_of_order,
            "corrupted": self.corrupted,
            "first_corrupted": self.first_corrupted,
            "senders": dict(self.senders),
        }


class PeerSession:
    """Carries out the commands for one connected emitter."""

    def __init__(self, bus: DistributedEventEmitter, name: str, signal: Signal) -> None:
        self.bus = bus
        self.name = name
        self.signal = signal
        self.tallies: dict[str, Tally] = {}
        self.heard: dict[str, set[str]] = {}

    def on_probe(self, event: DistributedEvent) -> None:
        self.heard[event.topic].add(event.sender)

    async def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        handler: Callable[[dict[str, Any]], Any] | None = getattr(
            self, f"do_{command.get('cmd')}", None
        )
        if handler is None:
            return {"ok": False, "error": f"unknown command {command.get('cmd')!r}"}
        result: dict[str, Any] = await handler(command)
        return result

    async def do_listen(self, command: dict[str, Any]) -> dict[str, Any]:
        pattern = str(command["pattern"])
        if pattern not in self.tallies:
            tally = Tally(self.bus.id, self.signal, ignored=self.heard.keys())
            self.tallies[pattern] = self.bus.on(pattern, tally)
        return {"ok": True}

    async def do_emit(self, command: dict[str, Any]) -> dict[str, Any]:
        topic, count = str(command["topic"]), int(command["count"])
        start = int(command.get("start", 1))
        for n in range(start, start + count):
            await self.bus.emit(topic, numbered(self.name, n))
        return {"ok": True, "emitted": count}

    async def do_wait(self, command: dict[str, Any]) -> dict[str, Any]:
        tally = self.tallies.get(str(command["pattern"]))
        if tally is None:
            return {"ok": False, "error": f"not listening on {command['pattern']!r}"}
        want = int(command["count"])
        include_own = bool(command.get("include_own", False))

        def count() -> int:
            assert tally is not None
            return tally.received if include_own else tally.from_others()

        reached = await self.signal.wait(lambda: count() >= want, float(command["timeout"]))
        return {"ok": reached, "received": count()}

    async def do_ping(self, command: dict[str, Any]) -> dict[str, Any]:
        topic = str(command.get("topic") or SYNC_TOPIC)
        if topic not in self.heard:
            self.heard[topic] = set()
            self.bus.on(topic, self.on_probe)
        await self.bus.emit(topic, {"node": self.name})
        return {"ok": True, "heard": sorted(self.heard[topic])}

    async def do_respond(self, command: dict[str, Any]) -> dict[str, Any]:
        topic = str(command["topic"])
        mode = str(command.get("mode", "echo"))
        if mode not in RESPONDER_MODES:
            return {"ok": False, "error": f"unknown responder mode {mode!r}; known: echo, raise"}
        name = self.name

        def respond(event: DistributedEvent) -> dict[str, Any]:
            if mode == "raise":
                raise RuntimeError(f"peer {name} refuses {event.topic!r} on purpose")
            return {"pid": os.getpid(), "node": name, "echo": event.data}

        self.bus.responder(topic, respond)
        await self.bus.listening()  # requests sent after this reply reach it
        return {"ok": True}

    async def do_unrespond(self, command: dict[str, Any]) -> dict[str, Any]:
        return {"ok": self.bus.off_responder(str(command["topic"]))}

    async def do_request(self, command: dict[str, Any]) -> dict[str, Any]:
        try:
            reply = await self.bus.request(
                str(command["topic"]),
                command.get("data"),
                timeout=float(command.get("timeout", 1.0)),
            )
        except Exception as exc:
            return {
                "ok": False,
                "raised": {
                    "type": type(exc).__name__,
                    "message": str(exc),
                    "responder": getattr(exc, "responder", ""),
                },
            }
        return {"ok": True, "reply": reply}

    async def do_report(self, command: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "id": self.bus.id,
            "listeners": {p: t.report() for p, t in self.tallies.items()},
            "stats": msgspec.structs.asdict(self.bus.stats()),
        }


def _write(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def serve(
    url: str | None, *, name: str, echo: bool, heartbeat_interval: float | None = None
) -> int:
    """Connect, announce readiness, then answer commands until ``close`` or end of input."""
    signal = Signal()
    options: dict[str, Any] = {}
    if heartbeat_interval is not None:
        options["heartbeat_interval"] = heartbeat_interval
    try:
        bus = connect(url, echo=echo, service=f"conformance-{name}", **options)
    except Exception as exc:
        _write({"ready": False, "error": f"{type(exc).__name__}: {exc}"})
        return 1
    session = PeerSession(bus, name, signal)
    async with bus:
        _write({"ready": True, "id": bus.id, "pid": os.getpid(), "name": name})
        while True:
            line = await anyio.to_thread.run_sync(sys.stdin.readline)
            if not line:
                return 0
            try:
                command = json.loads(line)
                if not isinstance(command, dict):
                    raise TypeError(f"a command is a JSON object, got {line.strip()!r}")
                if command.get("cmd") == "close":
                    await bus.aclose()
                    _write({"ok": True, "stats": msgspec.structs.asdict(bus.stats())})
                    return 0
                reply = await session.handle(command)
            except Exception as exc:
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            _write(reply)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nanomitter.conformance.peer",
        description="An emitter driven by JSON lines on stdin (see the module docstring).",
    )
    parser.add_argument("url", nargs="?", default=None, help="bus URL (default $NANOMITTER_URL)")
    parser.add_argument("--name", default="peer", help="name used in events and messages")
    parser.add_argument("--echo", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument(
        "--heartbeat-interval",
        type=float,
        default=None,
        metavar="SECONDS",
        help="presence heartbeat interval (default: the emitter's, 60 s)",
    )
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first (e.g. one that registers a transport); repeatable",
    )
    parser.add_argument(
        "--register",
        dest="registrations",
        action="append",
        default=[],
        metavar="SCHEME=MODULE:CLASS",
        help="use MODULE:CLASS for SCHEME:// URLs (as nanomitter.transports.register); repeatable",
    )
    args = parser.parse_args(argv)
    for module in args.imports:
        importlib.import_module(module)
    for registration in args.registrations:
        scheme, _, target = registration.partition("=")
        if not scheme or ":" not in target:
            parser.error(f"--register wants SCHEME=MODULE:CLASS, got {registration!r}")
        register(scheme, target)
    code: int = anyio.run(
        lambda: serve(
            args.url, name=args.name, echo=args.echo, heartbeat_interval=args.heartbeat_interval
        ),
        backend=args.backend,
    )
    return code


if __name__ == "__main__":
    sys.exit(main())
