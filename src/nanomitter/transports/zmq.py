"""ZeroMQ PUB/SUB through an XSUB/XPUB proxy (``zmq+tcp://``, ``zmq+ipc://``).

Topology: the hub is libzmq's proxy in a thread (:mod:`.zmq_proxy`); every emitter, the hub
process's own included, publishes with a PUB socket into the proxy's XSUB side and receives
with a SUB socket from its XPUB side. One URL names the bus; the two endpoints derive from it:

- ``zmq+tcp://HOST:PORT``: publishers connect to ``tcp://HOST:PORT``, subscribers to
  ``tcp://HOST:PORT+1`` (the hub binds both; a hub on ``*`` or ``0.0.0.0`` is reached at
  127.0.0.1 from its own host).
- ``zmq+ipc://PATH``: ``ipc://PATH.in`` and ``ipc://PATH.out``; the hub holds an ``flock`` on
  ``PATH.lock`` (libzmq silently takes over an existing ipc path, so binding alone cannot
  tell that a hub is alive). ``@NAME`` uses Linux's abstract namespace, no lock file.

``role=auto`` (default): whoever binds first runs the proxy, later ones connect.

Each message has two frames: the topic (UTF-8, what SUB prefixes match) and the envelope
(the codec's map, or under load an array of same-topic envelopes; see docs/wire.md). Each
listener pattern's literal prefix is a SUB subscription; exact matching stays in the core.

Slow joiner: ``open()`` returns once the node's own probe (``$nanomitter.probe.<sender>``)
has travelled PUB -> proxy -> SUB. The proxy's XSUB side subscribes to everything, so the
XPUB side is where filtering happens, and subscriptions reach it in order on one connection:
a probe that came back proves that every subscription sent before it is in force at the hub.
:meth:`ZmqTransport.sync_interest` does the same after listeners change.

I/O waits on ``zmq.FD`` with ``anyio.wait_readable`` (one waiter per socket) and then works
without blocking; ``zmq.EVENTS`` is re-read before every wait, because the fd only signals
new activity (edge-triggered). No ``zmq.asyncio``. Sends coalesce adaptively: the first event
of a turn of the event loop goes out at once, the ones emitted before the loop gets control
back are packed per topic into one frame at the end of the turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import anyio
import anyio.lowlevel
import anyio.to_thread
import msgspec
import zmq
import zmq.auth
from zmq.utils import z85

from ..core.codecs import (
    CODECS,
    DEFAULT_MAX_FRAME_BYTES,
    Codec,
    FrameDecoder,
    get_codec,
    within_limit,
)
from ..core.context import YIELD, TransportContext
from ..core.errors import InvalidOptionError, NanomitterError, OverflowProblem, Problem
from ..core.event import DistributedEvent
from ..core.stats import Counters
from ..core.topics import literal_prefix
from .base import MAX_BATCH, Capabilities, Transport, wake_fd_waiters
from .election import Election
from .registry import ZMQ_SCHEMES
from .url import BusURL, host_and_port
from .zmq_handshake import HandshakeWatch
from .zmq_proxy import PeerCallback, Proxy, ProxyBindError, ServerCurve

logger = logging.getLogger("nanomitter.zmq")
ROLES = ("auto", "hub", "node")
PROBE_PREFIX = "$nanomitter.probe."
"""Control topic: each node subscribes to ``PROBE_PREFIX + its sender id + ".N."`` and
publishes probes there to learn that its path through the hub is live. N grows with each
:meth:`ZmqTransport.sync_interest` (see there). Never reaches listeners."""
PROBE_RETRY = 0.05
"""Seconds between probes while waiting for one to come back."""
DEFAULT_HWM = 10_000
"""Messages (frames of up to ``batch`` events) each socket queues per direction."""
DEFAULT_BATCH = 64
"""Most events coalesced into one frame."""
BATCH_BYTES = 64 * 1024
"""A frame being coalesced is sent once it holds this many bytes."""
YIELD_EVERY = 64
"""Sends between checkpoints: a tight emit loop lets other tasks (and the flush) run."""
WIRE_CAP_FACTOR = 4
"""libzmq drops the connection of a peer that sends a message above this multiple of
max_frame_bytes; smaller oversized frames are read and counted in ``decode_errors``."""
_MORE = zmq.SNDMORE | zmq.NOBLOCK
_NOW = zmq.NOBLOCK


class NoHubError(NanomitterError, ConnectionError):
    """``role=node`` found no hub (or was refused by it) within ``connect_timeout``."""


# ---------------------------------------------------------------------------- endpoints


@dataclass(frozen=True)
class Endpoints:
    """Where the hub binds and nodes connect, derived from one bus URL."""

    publish: str
    """Nodes' PUB sockets connect here; the hub's XSUB binds ``bind_publish``."""
    subscribe: str
    """Nodes' SUB sockets connect here; the hub's XPUB binds ``bind_subscribe``."""
    bind_publish: str
    bind_subscribe: str
    lock: Path | None = None
    """ipc only: the file the hub holds an exclusive ``flock`` on while it runs."""
    ipv6: bool = False


def endpoints_for(scheme: str, address: str) -> Endpoints:
    """Derive the two endpoints from ``zmq+tcp://HOST:PORT`` or ``zmq+ipc://PATH``."""
    if scheme == "zmq+tcp":
        host, port = host_and_port(scheme, address, highest=65534, why=" (subscribers use PORT+1)")
        connect_host = {"*": "127.0.0.1", "0.0.0.0": "127.0.0.1", "[::]": "[::1]"}.get(host, host)
        return Endpoints(
            publish=f"tcp://{connect_host}:{port}",
            subscribe=f"tcp://{connect_host}:{port + 1}",
            bind_publish=f"tcp://{host}:{port}",
            bind_subscribe=f"tcp://{host}:{port + 1}",
            ipv6=host.startswith("["),
        )
    if scheme == "zmq+ipc":
        if not address:
            raise InvalidOptionError("zmq+ipc:// needs a path, e.g. zmq+ipc:///tmp/bus")
        publish, subscribe = f"ipc://{address}.in", f"ipc://{address}.out"
        lock = None if address.startswith("@") else Path(f"{address}.lock")
        return Endpoints(publish, subscribe, publish, subscribe, lock=lock)
    raise InvalidOptionError(f"not a ZeroMQ scheme: {scheme}://")


# ---------------------------------------------------------------------------- CURVE


@dataclass(frozen=True)
class Curve:
    """CURVE keys (Z85) for one member, and for the hub role its secret and allow-list."""

    server_public: bytes
    public: bytes
    secret: bytes = field(repr=False)
    server_secret: bytes | None = field(default=None, repr=False)
    allowed: frozenset[bytes] | None = None
    """Public keys the hub lets in; ``None`` = any client (``curve_allow=any``)."""
    allow_given: bool = False

    @classmethod
    def from_url(cls, url: BusURL) -> Curve | None:
        options = url.options
        if not any(name.startswith("curve_") for name in options):
            return None
        server_public = server_secret = None
        if "curve_server_keyfile" in options:
            server_public, server_secret = _load_keyfile("curve_server_keyfile", options)
        if "curve_server_key" in options:
            server_public = _key("curve_server_key", options["curve_server_key"])
        if "curve_server_secret" in options:
            server_secret = _key("curve_server_secret", options["curve_server_secret"])
        if server_public is None:
            if server_secret is None:
                raise InvalidOptionError(
                    f"CURVE needs the hub's public key: curve_server_key or "
                    f"curve_server_keyfile (in {url})"
                )
            server_public = zmq.curve_public(server_secret)
        public = secret = None
        if "curve_keyfile" in options:
            public, secret = _load_keyfile("curve_keyfile", options)
            if secret is None:
                raise InvalidOptionError(
                    f"curve_keyfile {options['curve_keyfile']!r} holds no secret key"
                )
        if "curve_secret_key" in options:
            secret = _key("curve_secret_key", options["curve_secret_key"])
            public = zmq.curve_public(secret)
        if "curve_public_key" in options:
            given = _key("curve_public_key", options["curve_public_key"])
            if public is not None and given != public:
                raise InvalidOptionError("curve_public_key does not belong to curve_secret_key")
            if secret is None:
                raise InvalidOptionError("curve_public_key needs curve_secret_key")
            public = given
        if public is None or secret is None:
            if server_secret is not None:  # the hub's own member, or a trusted holder of it
                public, secret = server_public, server_secret
            else:  # an anonymous key: useful only against a hub with curve_allow=any
                public, secret = zmq.curve_keypair()
        allowed: frozenset[bytes] | None = None
        allow_given = "curve_allow" in options
        if allow_given and options["curve_allow"] != "any":
            allowed = _allow_list(options["curve_allow"]) | {server_public}
        return cls(server_public, public, secret, server_secret, allowed, allow_given)

    def server(self, address: str) -> ServerCurve:
        """The hub's side; refuses to run a hub that would let anyone in by accident."""
        if self.server_secret is None:
            raise InvalidOptionError(
                f"the hub at {address} needs its secret key (curve_server_secret or a "
                "curve_server_keyfile with the secret) to serve CURVE"
            )
        if not self.allow_given:
            raise InvalidOptionError(
                f"the hub at {address} needs curve_allow: a directory of public certificates, "
                "a file of public keys, or 'any' (every client that knows the server key)"
            )
        return ServerCurve(self.server_public, self.server_secret, self.allowed)

    def apply(self, sock: zmq.Socket[Any]) -> None:
        sock.curve_serverkey = self.server_public
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret


def _key(name: str, text: str) -> bytes:
    """A CURVE key given as 64 hex digits (URL-safe) or 40 Z85 characters -> Z85 bytes."""
    text = text.strip()
    try:
        if len(text) == 64:
            return z85.encode(bytes.fromhex(text))
        if len(text) == 40 and len(z85.decode(text.encode())) == 32:
            return text.encode()
    except (ValueError, KeyError, IndexError, TypeError):
        pass
    raise InvalidOptionError(
        f"{name} must be a CURVE key: 64 hex digits or 40 Z85 characters "
        "(Z85 in a URL query must be percent-encoded; prefer hex)"
    )


def _load_keyfile(name: str, options: Mapping[str, str]) -> tuple[bytes, bytes | None]:
    path = options[name]
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise InvalidOptionError(
            f"{name}: cannot read a ZeroMQ certificate from {path!r} ({exc}); write one with "
            "zmq.auth.create_certificates (or CZMQ's zcert)"
        ) from exc
    if public is None:
        raise InvalidOptionError(f"{name}: {path!r} holds no public-key")
    public = _key(f"{name} public-key", public.decode("latin-1"))
    if secret is not None:
        secret = _key(f"{name} secret-key", secret.decode("latin-1"))
    return public, secret


def _allow_list(location: str) -> frozenset[bytes]:
    """Public keys from a directory of certificates, a certificate, or a file of keys."""
    path = Path(location)
    if path.is_dir():
        return frozenset(zmq.auth.load_certificates(str(path)))
    if not path.is_file():
        raise InvalidOptionError(
            f"curve_allow: {location!r} is neither a directory of certificates, a file of "
            "public keys, nor 'any'"
        )
    text = path.read_text()
    if "public-key" in text:
        public, _ = zmq.auth.load_certificate(str(path))
        return frozenset({public})
    keys = set()
    for line in text.splitlines():
        key = line.split("#", 1)[0].strip()
        if key:
            keys.add(_key(f"curve_allow ({location})", key))
    return frozenset(keys)


# ---------------------------------------------------------------------------- transport


class ZmqTransport(Transport):
    schemes: ClassVar[tuple[str, ...]] = ZMQ_SCHEMES
    options: ClassVar[Mapping[str, str]] = {
        "role": "auto (run the proxy if the address is free, else connect; default), hub, node",
        "codec": "msgpack (default) or json",
        "max_frame_bytes": f"largest frame accepted (default {DEFAULT_MAX_FRAME_BYTES})",
        "hwm": f"high-water mark of every socket, in messages (default {DEFAULT_HWM})",
        "send_hwm": "high-water mark of this node's PUB socket (default: hwm)",
        "recv_hwm": "high-water mark of this node's SUB socket (default: hwm)",
        "hub_hwm": "high-water mark of the proxy's sockets, per peer (default: hwm)",
        "send_timeout_ms": "how long emit waits for a full send queue before dropping (1000)",
        "batch": f"most events coalesced into one frame under load (default {DEFAULT_BATCH}; "
        "1 turns coalescing off)",
        "reconnect_ms": "delay before redialling a lost hub (default 100)",
        "election_ms": "how long an auto node goes without a hub before it runs the proxy "
        "itself (default 300; 0: never)",
        "connect_timeout": "seconds a node waits for the hub when it opens (default 10)",
        "linger_ms": "how long close waits for what was emitted to pass the hub (default 500)",
        "curve_server_key": "the hub's CURVE public key (64 hex digits or Z85); turns CURVE on",
        "curve_server_secret": "the hub's CURVE secret key (role hub/auto)",
        "curve_server_keyfile": "ZeroMQ certificate file with the hub's public (+secret) key",
        "curve_public_key": "this node's CURVE public key",
        "curve_secret_key": "this node's CURVE secret key",
        "curve_keyfile": "ZeroMQ certificate file with this node's keys (public and secret)",
        "curve_allow": "hub: directory of client certificates, file of public keys, or 'any'",
    }
    capabilities: ClassVar[Capabilities] = Capabilities(
        echoes_to_sender=True, filters_by_interest=True, raw_frames=True, crosses_processes=True
    )

    def __init__(
        self,
        scheme: str,
        address: str,
        *,
        role: str = "auto",
        codec: str = "msgpack",
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        send_hwm: int = DEFAULT_HWM,
        recv_hwm: int = DEFAULT_HWM,
        hub_hwm: int = DEFAULT_HWM,
        send_timeout_ms: int = 1000,
        batch: int = DEFAULT_BATCH,
        reconnect_ms: int = 100,
        election_ms: int = 300,
        connect_timeout: float = 10.0,
        linger_ms: int = 500,
        curve: Curve | None = None,
    ) -> None:
        self.scheme = scheme
        self.bus_address = address
        self.endpoints = endpoints_for(scheme, address)
        self.role = role
        self.codec: Codec = get_codec(codec)
        self.max_frame_bytes = max_frame_bytes
        # a coalesced frame (the run plus an array header, or JSON's brackets and commas)
        # must stay within what receivers accept
        self._batch_bytes = min(BATCH_BYTES, max_frame_bytes - batch - 8)
        self.send_hwm = send_hwm
        self.recv_hwm = recv_hwm
        self.hub_hwm = hub_hwm
        self.send_timeout = send_timeout_ms / 1000
        self.batch = batch
        self.reconnect_ms = reconnect_ms
        self.election = Election(election_ms)
        self.connect_timeout = connect_timeout
        self.linger_ms = linger_ms
        self.curve = curve
        self.proxy: Proxy | None = None
        self.on_peer: PeerCallback | None = None
        """Set before ``open()`` to hear ``(joined, address)`` from the proxy this node runs
        (``nanomitter hub`` prints them); called from a monitor thread, must not block."""
        self._context: zmq.Context[zmq.Socket[bytes]] | None = None
        self._pub: zmq.Socket[bytes] | None = None
        self._sub: zmq.Socket[bytes] | None = None
        self._pub_fd = -1
        self._sub_fd = -1
        self._lock_fd: int | None = None
        self._closed = False
        self._decoder: FrameDecoder | None = None
        self._counters = Counters()
        self._report: Callable[[Problem], None] = lambda problem: None
        self._sender = ""
        self._probe_topic = b""
        self._probe_generation = 0
        self._prefixes: set[bytes] = set()
        # receiving
        self._recv_lock: anyio.Lock | None = None
        self._inbox: list[DistributedEvent] = []
        self._probes_sent = 0
        self._probe_seen = 0
        self._probe_arrived: anyio.Event | None = None
        # sending
        self._send_lock: anyio.Lock | None = None
        self._call_soon: Callable[[Callable[[], None]], object] | None = None
        self._topics: dict[str, bytes] = {}
        self._run: list[bytes] = []
        self._run_topic = ""
        self._run_bytes = 0
        self._turn_busy = False
        self._since_yield = 0
        self._backlog: deque[tuple[bytes, bytes, int]] = deque()
        self._stalled_since = 0.0
        self._congested = False
        self._drop_reported = False
        self._unconfirmed = False
        self.frames_sent = 0
        self.events_coalesced = 0
        self.dropped = 0

    @classmethod
    def from_url(cls, url: BusURL) -> ZmqTransport:
        hwm = url.int_option("hwm", DEFAULT_HWM, minimum=1)
        return cls(
            url.scheme,
            url.address,
            role=url.choice_option("role", ROLES, "auto"),
            codec=url.choice_option("codec", list(CODECS), "msgpack"),
            max_frame_bytes=url.int_option("max_frame_bytes", DEFAULT_MAX_FRAME_BYTES, minimum=64),
            send_hwm=url.int_option("send_hwm", hwm, minimum=1),
            recv_hwm=url.int_option("recv_hwm", hwm, minimum=1),
            hub_hwm=url.int_option("hub_hwm", hwm, minimum=1),
            send_timeout_ms=url.int_option("send_timeout_ms", 1000, minimum=0),
            batch=url.int_option("batch", DEFAULT_BATCH, minimum=1),
            reconnect_ms=url.int_option("reconnect_ms", 100, minimum=1),
            election_ms=url.int_option("election_ms", 300, minimum=0),
            connect_timeout=url.float_option("connect_timeout", 10.0),
            linger_ms=url.int_option("linger_ms", 500, minimum=0),
            curve=Curve.from_url(url),
        )

    # ------------------------------------------------------------------ lifecycle

    async def open(self, context: TransportContext) -> None:
        self._decoder = context.decoder(self.codec, self.max_frame_bytes)
        self._counters = context.counters
        self._report = context.report
        self._sender = context.sender
        self._probe_topic = self._probe_topic_for(0)
        self._recv_lock = anyio.Lock()
        self._send_lock = anyio.Lock()
        self._call_soon = _call_soon()
        zmq_context: zmq.Context[zmq.Socket[bytes]] = zmq.Context(io_threads=1)
        self._context = zmq_context
        watch: HandshakeWatch | None = None
        try:
            if self.role == "hub" or (self.role == "auto" and self._may_serve()):
                self._try_become_hub(required=self.role == "hub")
            sub = self._sub = zmq_context.socket(zmq.SUB)
            pub = self._pub = zmq_context.socket(zmq.PUB)
            for sock in (sub, pub):
                sock.reconnect_ivl = self.reconnect_ms
                sock.ipv6 = self.endpoints.ipv6
                if self.curve is not None:
                    self.curve.apply(sock)
            sub.linger = 0
            sub.rcvhwm = self.recv_hwm
            sub.maxmsgsize = self.max_frame_bytes * WIRE_CAP_FACTOR
            for prefix in self._prefixes:
                sub.subscribe(prefix)
            sub.subscribe(self._probe_topic)  # last: its probe comes back behind them all
            pub.linger = self.linger_ms
            pub.sndhwm = self.send_hwm
            pub.setsockopt(zmq.XPUB_NODROP, 1)  # a full queue says EAGAIN: we wait, then count
            if self.proxy is None:  # before connect(): a refusal is reported once, at once
                own_key = self.curve.public if self.curve is not None else None
                watch = HandshakeWatch(sub, self.address, own_key)
            sub.connect(self.endpoints.subscribe)
            pub.connect(self.endpoints.publish)
            self._sub_fd = _int_option(sub, zmq.FD)
            self._pub_fd = _int_option(pub, zmq.FD)
            await self._await_hub(watch)
        except BaseException:
            if watch is not None:
                watch.close()
            self._release(linger=False)
            self._context = None
            zmq_context.term()
            raise
        if watch is not None:
            watch.close()

    async def _await_hub(self, watch: HandshakeWatch | None) -> None:
        """The first probe's round trip through the hub, cut short when the monitor says
        the hub refused this node's handshake."""

        def refused() -> None:
            refusal = watch.check() if watch is not None else None
            if refusal is not None:
                raise NoHubError(refusal)

        if not await self._await_probe(self._send_probe(), self.connect_timeout, refused):
            raise NoHubError(
                f"no hub answered at {self.address} within {self.connect_timeout} s: start "
                "one (role=hub or role=auto), or check the address"
                + (" and the CURVE keys (is this node on the hub's curve_allow list?)")
                * (self.curve is not None)
                + (watch.hint() if watch is not None else "")
            )

    def _may_serve(self) -> bool:
        """An auto member without the hub's CURVE secret can only join."""
        return self.curve is None or self.curve.server_secret is not None

    def _try_become_hub(self, *, required: bool) -> bool:
        """Run the proxy; False if another hub has the address (unless ``required``)."""
        assert self._context is not None
        lock_fd = None
        if self.endpoints.lock is not None:
            lock_fd = os.open(self.endpoints.lock, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(lock_fd)
                if required:
                    why = f"another hub holds {self.endpoints.lock}"
                    raise _in_use(self.address, why) from None
                return False
        try:
            self.proxy = Proxy(
                self._context,
                self.endpoints.bind_publish,
                self.endpoints.bind_subscribe,
                hwm=self.hub_hwm,
                max_message_bytes=self.max_frame_bytes * WIRE_CAP_FACTOR,
                linger_ms=self.linger_ms,
                ipv6=self.endpoints.ipv6,
                curve=self.curve.server(self.address) if self.curve is not None else None,
                on_peer=self.on_peer,
                own_member_first=True,  # our own member connects right after the bind
            )
        except ProxyBindError as exc:
            if lock_fd is not None:
                os.close(lock_fd)
            first = exc.endpoint == self.endpoints.bind_publish
            if exc.errno == errno.EADDRINUSE and first and not required:
                return False
            if exc.errno == errno.EADDRINUSE:
                raise _in_use(self.address, f"{exc.endpoint} is taken") from exc
            raise NanomitterError(f"cannot become the hub at {self.address}: {exc}") from exc
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)
            raise
        self._lock_fd = lock_fd
        return True

    async def aclose(self) -> None:
        """Push out what was emitted, wait (up to ``linger_ms``) until a probe sent after it
        has come back through the hub, then close sockets, proxy and context."""
        if self._closed or self._context is None:
            return
        self._closed = True
        with anyio.move_on_after(self.linger_ms / 1000):
            self._end_turn()
            if self._backlog:
                await self._wait_backlog(final=True)
            if self._unconfirmed and self._pub is not None:
                await self._await_probe(self._send_probe(), self.linger_ms / 1000)
        if self._backlog:
            self._drop_backlog()
        context, self._context = self._context, None
        self._release(linger=True)
        with anyio.CancelScope(shield=True):  # an unterminated context would leak its threads
            await anyio.to_thread.run_sync(context.term)  # returns once linger has passed

    def _release(self, *, linger: bool) -> None:
        """Wake whoever waits on our fds, then close sockets, proxy and lock (no awaits)."""
        wake_fd_waiters(self._sub_fd, self._pub_fd)
        self._sub_fd = self._pub_fd = -1
        sub, self._sub = self._sub, None
        pub, self._pub = self._pub, None
        if sub is not None:
            sub.close(0)
        if pub is not None:
            pub.close(None if linger else 0)
        proxy, self.proxy = self.proxy, None
        if proxy is not None:
            proxy.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # ------------------------------------------------------------------ interest

    def set_interest(self, patterns: frozenset[str]) -> None:
        """Subscribe to each pattern's literal prefix (bare ``*`` -> everything)."""
        prefixes = {literal_prefix(pattern).encode() for pattern in patterns}
        old, self._prefixes = self._prefixes, prefixes
        sub = self._sub
        if sub is None:
            return  # applied when the transport opens
        for prefix in prefixes - old:
            sub.subscribe(prefix)
        for prefix in old - prefixes:
            sub.unsubscribe(prefix)

    async def sync_interest(self) -> None:
        """Return once every subscription made so far is in force at the hub.

        After it returns, an event that any node emits on a topic the current listeners
        match is delivered here. Raises ``TimeoutError`` if the hub does not answer within
        ``connect_timeout`` seconds.
        """
        if self._sub is None:
            raise anyio.ClosedResourceError
        self._next_probe_topic()
        if not await self._await_probe(self._send_probe(), self.connect_timeout):
            raise TimeoutError(
                f"the hub at {self.address} did not answer within {self.connect_timeout} s"
            )

    def _probe_topic_for(self, generation: int) -> bytes:
        # the closing "." keeps any one of them from being a prefix of another (1 and 10)
        return f"{PROBE_PREFIX}{self._sender}.{generation}.".encode()

    def _next_probe_topic(self) -> None:
        """Probe on a topic subscribed just now, behind every subscription before it.

        A probe proves a subscription is in force at the hub only if the hub read that
        subscription first. The SUB socket sends its subscriptions in order on one
        connection, so a probe on a topic subscribed after them comes back only once the hub
        has read them all; a probe topic subscribed long ago proves nothing about later ones
        (the probe takes another connection, and under load it can overtake them).
        """
        sub = self._sub
        assert sub is not None
        old = self._probe_topic
        self._probe_generation += 1
        self._probe_topic = self._probe_topic_for(self._probe_generation)
        sub.subscribe(self._probe_topic)
        sub.unsubscribe(old)

    def _send_probe(self) -> int:
        """Queue a probe behind everything sent so far; return its number."""
        self._end_turn()
        self._probes_sent += 1
        number = self._probes_sent
        probe = DistributedEvent(
            topic=self._probe_topic.decode(), data={"n": number}, sender=self._sender
        )
        self._ship(self._probe_topic, self.codec.encode(probe), 0)
        self._unconfirmed = False
        return number

    async def _await_probe(
        self, number: int, seconds: float, between: Callable[[], None] | None = None
    ) -> bool:
        """Wait until probe ``number`` (or a later one) is back; resend now and then, and
        call ``between()`` before each resend (it may raise to give up early).

        Reads the SUB socket itself when nobody else does (during open and close), else
        lets the receive loop spot the probe. Events read meanwhile are kept for receive().
        """
        assert self._recv_lock is not None
        with anyio.move_on_after(seconds):
            while self._probe_seen < number:
                if self._recv_lock.locked():
                    if self._probe_arrived is None:
                        self._probe_arrived = anyio.Event()
                    with anyio.move_on_after(PROBE_RETRY):
                        await self._probe_arrived.wait()
                else:
                    async with self._recv_lock:
                        with anyio.move_on_after(PROBE_RETRY):
                            while self._probe_seen < number:
                                self._inbox.extend(await self._read(probe=number))
                if self._probe_seen < number and between is not None:
                    between()
                if self._probe_seen < number and self._pub is not None:
                    self._send_probe()  # the first may have gone before the path was up
        return self._probe_seen >= number

    # ------------------------------------------------------------------ sending

    @property
    def max_event_bytes(self) -> int:
        return self.max_frame_bytes

    async def send(self, event: DistributedEvent) -> None:
        pending = self.send_nowait(event)
        if pending is not None:
            await pending

    def send_nowait(self, event: DistributedEvent) -> Awaitable[None] | None:
        # raises here, before anything is queued
        frame = within_limit(self.codec.encode(event), event.topic, self.max_frame_bytes)
        if self._pub is None:
            raise anyio.ClosedResourceError
        if self._backlog:
            return self._send_after_backlog(event.topic, frame)
        self._queue(event.topic, frame)
        self._since_yield += 1
        if self._since_yield >= YIELD_EVERY:
            self._since_yield = 0
            return YIELD
        return None

    async def _send_after_backlog(self, topic: str, frame: bytes) -> None:
        await self._wait_backlog()
        if self._pub is None:
            raise anyio.ClosedResourceError
        self._queue(topic, frame)

    def _queue(self, topic: str, frame: bytes) -> None:
        """Send ``frame`` now, or coalesce it with the same-topic events of this loop turn."""
        run = self._run
        if run:
            if (
                topic != self._run_topic
                or len(run) >= self.batch
                or self._run_bytes + len(frame) > self._batch_bytes
            ):
                self._ship_run()
                self._run_topic = topic
            run.append(frame)
            self._run_bytes += len(frame)
        elif self._turn_busy and self.batch > 1:
            self._run_topic = topic
            run.append(frame)
            self._run_bytes = len(frame)
        else:  # the first event of this turn of the loop goes out at once
            self._ship(self._topic_bytes(topic), frame, 1)
            if not self._turn_busy and self.batch > 1:
                self._turn_busy = True
                assert self._call_soon is not None
                self._call_soon(self._end_turn_soon)

    async def send_raw(self, frame: bytes) -> None:
        """Send ``frame`` as an envelope; the topic frame is its topic if it decodes, else ''."""
        if self._pub is None:
            raise anyio.ClosedResourceError
        topic = b""
        with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
            decoded = self.codec.decode(frame)
            if isinstance(decoded, DistributedEvent):
                topic = decoded.topic.encode()
        self._end_turn()
        self._ship(topic, frame, 1)
        if self._backlog:
            await self._wait_backlog()
        await anyio.lowlevel.checkpoint()

    def _topic_bytes(self, topic: str) -> bytes:
        encoded = self._topics.get(topic)
        if encoded is None:
            if len(self._topics) >= 4096:
                self._topics.clear()
            encoded = self._topics[topic] = topic.encode()
        return encoded

    def _end_turn_soon(self) -> None:
        """Runs once the emitting task yields to the loop: send what was coalesced."""
        try:
            self._end_turn()
            if self._backlog:
                self._service_backlog()
        except Exception:  # never raise into the event loop (trio would crash)
            logger.exception("flushing coalesced events failed")

    def _end_turn(self) -> None:
        self._turn_busy = False
        if self._run:
            self._ship_run()

    def _ship_run(self) -> None:
        """Send the coalesced same-topic events as one frame (alone: as a plain envelope)."""
        run = self._run
        count = len(run)
        if count == 1:
            frame = run[0]
        elif self.codec.name == "json":
            frame = b"[" + b",".join(run) + b"]"
        else:
            frame = _msgpack_array_header(count) + b"".join(run)
        run.clear()
        self._run_bytes = 0
        if count > 1:
            self.events_coalesced += count
        self._ship(self._topic_bytes(self._run_topic), frame, count)

    def _ship(self, topic: bytes, frame: bytes, count: int) -> None:
        """Send one message without blocking; if the queue is full keep it (or, congested,
        drop and count it)."""
        pub = self._pub
        if pub is None:
            return
        if not self._backlog:
            try:
                pub.send(topic, _MORE)
                pub.send(frame, _NOW)
            except zmq.Again:
                pass
            else:
                self.frames_sent += 1
                self._unconfirmed = True
                if self._congested:
                    self._congested = self._drop_reported = False
                return
            if self._congested:
                self._drop(count)
                return
            self._stalled_since = time.monotonic()
        self._backlog.append((topic, frame, count))
        self._drain_backlog()

    def _drain_backlog(self) -> bool:
        """Send what the queue takes now; True once the backlog is empty."""
        pub = self._pub
        backlog = self._backlog
        if pub is None:
            return True
        with contextlib.suppress(zmq.ZMQError):
            pub.getsockopt(zmq.EVENTS)  # process libzmq's commands (the reader caught up?)
        while backlog:
            topic, frame, _ = backlog[0]
            try:
                pub.send(topic, _MORE)
                pub.send(frame, _NOW)
            except zmq.Again:
                return False
            backlog.popleft()
            self.frames_sent += 1
            self._unconfirmed = True
        self._congested = self._drop_reported = False
        return True

    def _service_backlog(self) -> None:
        """Retry the backlog; past ``send_timeout`` drop it and treat the hub as congested."""
        if not self._drain_backlog() and (
            time.monotonic() - self._stalled_since >= self.send_timeout
        ):
            self._drop_backlog()

    async def _wait_backlog(self, *, final: bool = False) -> None:
        """Wait (at most ``send_timeout`` from the stall) until the backlog is sent."""
        assert self._send_lock is not None
        async with self._send_lock:  # one waiter on the PUB fd
            while self._backlog:
                if self._drain_backlog():
                    return
                remaining = self._stalled_since + self.send_timeout - time.monotonic()
                if remaining <= 0 and not final:
                    self._drop_backlog()
                    return
                with anyio.move_on_after(max(remaining, PROBE_RETRY)):
                    await anyio.wait_readable(self._pub_fd)

    def _drop_backlog(self) -> None:
        count = sum(item[2] for item in self._backlog)
        self._backlog.clear()
        self._congested = True
        self._drop(count)

    def _drop(self, count: int) -> None:
        """Count dropped events; report once per congestion, not once per event."""
        if not count:
            return
        self.dropped += count
        self._counters.dropped += count
        if not self._drop_reported:
            self._drop_reported = True
            where = f"the ZeroMQ send queue to {self.address} (and until it drains, later ones)"
            self._report(OverflowProblem(where, self.send_hwm))

    # ------------------------------------------------------------------ receiving

    async def receive(self) -> list[DistributedEvent]:
        if self._inbox:
            return self._take_inbox()
        assert self._recv_lock is not None
        async with self._recv_lock:
            if self._inbox:
                return self._take_inbox()
            events = await self._read()
        if len(events) > MAX_BATCH:
            self._inbox.extend(events[MAX_BATCH:])
            del events[MAX_BATCH:]
        return events

    def _take_inbox(self) -> list[DistributedEvent]:
        inbox = self._inbox
        if len(inbox) <= MAX_BATCH:
            self._inbox = []
            return inbox
        self._inbox = inbox[MAX_BATCH:]
        return inbox[:MAX_BATCH]

    async def _read(self, *, probe: int = 0) -> list[DistributedEvent]:
        """Read every ready message (at least one event, or probe ``probe`` if given)."""
        decoder = self._decoder
        assert decoder is not None
        events: list[DistributedEvent] = []
        waited = False
        while True:
            sub = self._sub
            if sub is None:
                raise anyio.EndOfStream
            try:
                topic = sub.recv(_NOW)
                if not sub.getsockopt(zmq.RCVMORE):
                    decoder.reject("a one-frame message (expected topic, envelope)", topic)
                    continue
                frame = sub.recv(_NOW)
                if sub.getsockopt(zmq.RCVMORE):
                    parts = 2
                    while sub.getsockopt(zmq.RCVMORE):
                        sub.recv(_NOW)
                        parts += 1
                    decoder.reject(f"a {parts}-frame message (expected topic, envelope)", frame)
                    continue
            except zmq.Again:
                if events or (probe and self._probe_seen >= probe):
                    break
                await self._wait_readable()
                waited = True
                continue
            except zmq.ZMQError:
                raise anyio.EndOfStream from None
            if topic[:1] == b"$":
                self._control(topic, frame)
                continue
            decoder.decode_into(frame, events)
            if len(events) >= MAX_BATCH:
                break
        if not waited:
            await anyio.lowlevel.checkpoint()  # busy bus: still let other tasks run
        return events

    async def _wait_readable(self) -> None:
        """Wait until the SUB socket has a message (EVENTS first: the fd is edge-triggered).

        While waiting, retry a send backlog now and then and, as an ``auto`` node, look for
        a missing hub to replace.
        """
        while True:
            sub = self._sub
            if sub is None:
                raise anyio.EndOfStream
            try:
                if _int_option(sub, zmq.EVENTS) & zmq.POLLIN:
                    return
            except zmq.ZMQError:
                raise anyio.EndOfStream from None
            electing = (
                self.role == "auto"
                and self.proxy is None
                and self.election.election_ms > 0
                and self._may_serve()
            )
            if not (self._backlog or electing):
                await anyio.wait_readable(self._sub_fd)
                continue
            patience = PROBE_RETRY if self._backlog else self.election.patience
            with anyio.move_on_after(patience):
                await anyio.wait_readable(self._sub_fd)
                self.election.hub_seen()  # traffic: a hub forwards to us
                continue
            if self._backlog:
                self._service_backlog()
            if electing:  # run the proxy once the hub's address has been free long enough
                self.election.check(
                    self._hub_address_free(),
                    partial(self._try_become_hub, required=False),
                    self.address,
                )

    def _hub_address_free(self) -> bool:
        """Whether nobody serves the bus here: the XSUB port binds, or the ipc lock is free.
        False for a hub on another host (we could not bind its address anyway)."""
        lock = self.endpoints.lock
        if lock is not None:
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError:
                return False
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            finally:
                os.close(fd)  # releases the lock if we got it
            return True
        if not self.endpoints.bind_publish.startswith("tcp://"):
            return False
        host, _, port = self.endpoints.bind_publish.removeprefix("tcp://").rpartition(":")
        host = {"*": "0.0.0.0"}.get(host, host).strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, int(port)))
            except OSError:
                return False
        return True

    def _control(self, topic: bytes, frame: bytes) -> None:
        """Our own probe came back; other control traffic (others' probes) is ignored."""
        if topic != self._probe_topic:
            return
        try:
            probe = self.codec.decode(frame)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        if not isinstance(probe, DistributedEvent) or probe.sender != self._sender:
            return
        number = probe.data.get("n") if isinstance(probe.data, dict) else None
        if type(number) is int and number > self._probe_seen:
            self._probe_seen = number
            arrived, self._probe_arrived = self._probe_arrived, None
            if arrived is not None:
                arrived.set()

    # ------------------------------------------------------------------ reporting

    @property
    def is_hub(self) -> bool:
        return self.proxy is not None

    @property
    def address(self) -> str:
        return f"{self.scheme}://{self.bus_address}"

    def statistics(self) -> Mapping[str, int]:
        figures = {
            "hub": int(self.proxy is not None),
            "elections_won": self.election.won,
            "subscriptions": len(self._prefixes),
            "frames_sent": self.frames_sent,
            "events_coalesced": self.events_coalesced,
            "send_backlog": len(self._backlog),
            "send_dropped": self.dropped,
        }
        proxy = self.proxy
        if proxy is not None:
            figures.update({f"hub_{k}": v for k, v in proxy.statistics().items()})
            if proxy.zap is not None:
                figures["hub_clients_accepted"] = proxy.zap.accepted
                figures["hub_clients_refused"] = proxy.zap.denied
        return figures


def _int_option(sock: zmq.Socket[bytes], option: int) -> int:
    value = sock.getsockopt(option)
    assert isinstance(value, int)
    return value


def _msgpack_array_header(count: int) -> bytes:
    """The msgpack header of an array of ``count`` items (the envelopes follow it as-is)."""
    if count < 16:
        return bytes((0x90 | count,))
    if count < 0x10000:
        return b"\xdc" + count.to_bytes(2, "big")
    return b"\xdd" + count.to_bytes(4, "big")


def _call_soon() -> Callable[[Callable[[], None]], object]:
    """The running loop's "call this soon, from the loop" (asyncio or trio)."""
    try:
        return asyncio.get_running_loop().call_soon
    except RuntimeError:
        import trio

        return trio.lowlevel.current_trio_token().run_sync_soon


def _in_use(address: str, why: str) -> NanomitterError:
    return NanomitterError(
        f"cannot become the hub at {address}: the address is in use ({why}); use role=node "
        "or role=auto to join the hub that runs there"
    )
