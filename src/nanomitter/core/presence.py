"""Presence: who is on the bus, from the original nanomitter's ``<3`` heartbeats.

An emitter with a service name sends ``<3`` ``{"service": ...}`` when it opens and every
``heartbeat_interval`` seconds; ours add ``interval``, ``host`` and ``pid``, and a last one
with ``"bye": true`` when it closes. A receiver keeps a table of the senders it heard: a peer
joins with its first heartbeat and leaves with its bye, or when it has been silent for
:data:`MISSED_HEARTBEATS` of its own intervals (a killed process sends no bye). Peers that
do not say their interval (the original package) get the original's 60 s.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

from .errors import ListenerError, Problem
from .topics import validate_pattern

MISSED_HEARTBEATS = 3
"""A peer is gone after this many of its heartbeat intervals without one."""
ORIGINAL_INTERVAL = 60.0
"""The original nanomitter's heartbeat interval, for peers that do not announce theirs."""
MAX_PEERS = 8192
MAX_RESPONDS = 256
"""The most responder patterns one peer's heartbeat may announce (the rest are ignored)."""

PeerEvent = Literal["joined", "left"]
PeerHook = Callable[["Peer"], object]


@dataclass(frozen=True)
class Peer:
    """A member of the bus that announced itself."""

    id: str
    """The emitter's sender id (``event.sender`` of what it emits)."""
    service: str
    host: str = ""
    """The host name it runs on, when it says (ours do; the original package does not)."""
    pid: int = 0
    interval: float = ORIGINAL_INTERVAL
    """Its heartbeat interval in seconds."""
    first_seen: float = 0.0
    """``time.time()`` of its first heartbeat here."""
    last_seen: float = 0.0
    """``time.time()`` of its latest heartbeat here."""
    responds: tuple[str, ...] = ()
    """The topics (or patterns) its responders serve (see ``bus.responder``)."""

    @property
    def expires(self) -> float:
        """When it is declared gone if no heartbeat comes (``time.time()`` scale)."""
        return self.last_seen + MISSED_HEARTBEATS * self.interval


def heartbeat_data(
    service: str,
    interval: float,
    *,
    bye: bool = False,
    responds: tuple[str, ...] = (),
    seqs: dict[str, int] | None = None,
) -> dict[str, Any]:
    """What our ``<3`` heartbeats carry (the original's ``service`` first; ``seqs``: see
    :mod:`.tail`)."""
    data: dict[str, Any] = {
        "service": service,
        "interval": interval,
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    if responds:
        data["responds"] = list(responds)
    if seqs:
        data["seqs"] = seqs
    if bye:
        data["bye"] = True
    return data


class PeerTable:
    """The live peers and the hooks that hear them come and go."""

    def __init__(self, report: Callable[[Problem], None], count_error: Callable[[], None]):
        self._peers: dict[str, Peer] = {}
        self._hooks: dict[PeerEvent, list[PeerHook]] = {"joined": [], "left": []}
        self._report = report
        self._count_error = count_error
        self.version = 0
        """Bumped whenever a peer joins, leaves or changes what it responds to."""

    def peers(self) -> list[Peer]:
        """The live peers, oldest first."""
        return list(self._peers.values())

    def add_hook(self, kind: PeerEvent, hook: PeerHook) -> None:
        if kind not in self._hooks:
            raise ValueError(f"on_peer() takes 'joined' or 'left', got {kind!r}")
        if not callable(hook):
            raise TypeError(f"peer hook must be callable, got {hook!r}")
        self._hooks[kind].append(hook)

    def remove_hook(self, kind: PeerEvent, hook: PeerHook) -> bool:
        hooks = self._hooks.get(kind, [])
        if hook in hooks:
            hooks.remove(hook)
            return True
        return False

    def heartbeat(self, sender: str, data: Any, now: float | None = None) -> None:
        """A ``<3`` from ``sender``: it joined, is still there, or said goodbye."""
        now = time.time() if now is None else now
        fields = data if isinstance(data, dict) else {}
        known = self._peers.get(sender)
        if fields.get("bye") is True:
            if known is not None:
                del self._peers[sender]
                self.version += 1
                self._call("left", known)
            return
        interval = fields.get("interval")
        if not isinstance(interval, int | float) or isinstance(interval, bool) or interval <= 0:
            interval = ORIGINAL_INTERVAL
        service = fields.get("service")
        host = fields.get("host")
        pid = fields.get("pid")
        peer = Peer(
            id=sender,
            service=service if isinstance(service, str) else "",
            host=host if isinstance(host, str) else "",
            pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else 0,
            interval=float(interval),
            first_seen=known.first_seen if known is not None else now,
            last_seen=now,
            responds=_patterns(fields.get("responds")),
        )
        if known is None and len(self._peers) >= MAX_PEERS:
            return  # bounded, like every table here
        self._peers[sender] = peer
        if known is None or known.responds != peer.responds:
            self.version += 1
        if known is None:
            self._call("joined", peer)

    def expire(self, now: float | None = None) -> float | None:
        """Declare silent peers gone; return when the next one would expire, if any."""
        now = time.time() if now is None else now
        gone = [peer for peer in self._peers.values() if peer.expires <= now]
        for peer in gone:
            del self._peers[peer.id]
            self.version += 1
            self._call("left", replace(peer))
        if not self._peers:
            return None
        return min(peer.expires for peer in self._peers.values())

    def _call(self, kind: PeerEvent, peer: Peer) -> None:
        for hook in list(self._hooks[kind]):
            try:
                hook(peer)
            except Exception as exc:
                self._count_error()
                self._report(ListenerError(f"<3 ({kind})", hook, exc))


def _patterns(value: Any) -> tuple[str, ...]:
    """The valid patterns in a heartbeat's ``responds`` list (anything else is ignored)."""
    if not isinstance(value, list):
        return ()
    valid: list[str] = []
    for pattern in value[:MAX_RESPONDS]:
        try:
            valid.append(validate_pattern(pattern))
        except (TypeError, ValueError):
            continue
    return tuple(valid)
