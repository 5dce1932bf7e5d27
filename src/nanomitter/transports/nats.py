"""NATS (``nats://``, ``tls://``): the bus on a NATS server or cluster.

Topics are subjects (behind an optional ``prefix``); each distinct listener pattern is one
NATS subscription (``*`` and ``>`` are native, a bare ``*`` subscribes to ``>``), so the
server filters. The body is the event's data alone (JSON by default) and the metadata rides
in headers, so plain NATS clients in any language take part::

    HPUB stockprice 106 137
    NATS/1.0
    Content-Type: application/json
    Nanomitter-Sender: V1StGXR8_Z5jdHi6B-myT
    Nanomitter-Seq: 42

    {"ticker":"AAPL","price":251.3}

A message without headers is an event from an unnumbered foreign sender; its body is read
with this node's codec (an empty body is ``None``). A receiver reads each body by its
``Content-Type``, so nodes with different codecs share a bus.

Connections use the server's no-echo: the core already gives an emitter its own events
(``echo=True``) without a round trip. When patterns overlap (``stock.>`` and ``*.AAPL``) the
server sends one copy per matching subscription; the oldest subscription that matches a
subject is the one whose copy is delivered, so each event is dispatched once.

nats-py runs on asyncio only: on trio, opening raises :class:`UnsupportedBackendError`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import unquote

import anyio
import anyio.lowlevel
import msgspec
from nats import errors as nats_errors

from ..core.codecs import MsgpackCodec
from ..core.context import TransportContext
from ..core.errors import (
    ConnectionStateChanged,
    EventTooLargeError,
    FrameDecodeError,
    InvalidOptionError,
    NanomitterError,
    OverflowProblem,
    PermissionDenied,
    Problem,
    UnsupportedBackendError,
)
from ..core.event import DistributedEvent
from ..core.payloads import PAYLOAD_CODECS, PayloadCodec, by_content_type, get_payload_codec
from ..core.requests import ASK, NO_RESPONDERS, REPLY, UNDECODABLE, reply_topic
from ..core.stats import Counters
from ..core.topics import ANY, pattern_matches, validate_pattern
from .base import MAX_BATCH, Capabilities, Transport, current_backend
from .nats_client import BusClient
from .nats_plain import PlainRequests
from .registry import NATS_SCHEMES
from .url import BusURL, redact

logger = logging.getLogger("nanomitter.nats")

DEFAULT_PORT = 4222
SENDER_HEADER = "Nanomitter-Sender"
SEQ_HEADER = "Nanomitter-Seq"
CONTENT_TYPE_HEADER = "Content-Type"
DEFAULT_INBOX = 65_536
"""Received events waiting for the emitter's receive loop, at most."""
DEFAULT_BUFFER = 8 * 1024 * 1024
"""Bytes of outgoing commands nats-py keeps while disconnected (then emits are dropped)."""
MAX_CACHED = 4096
_SEQ_MARK = f"\r\n{SEQ_HEADER}: ".encode()
_END = b"\r\n\r\n"
_SKIP = -1
"""Owner of a subject that never reaches listeners (NATS plumbing: ``$...``, ``_INBOX.``)."""
_QUEUED = -2
"""Owner of a request subject: only a queue subscription's copy is a request for us."""
QUEUE_GROUP = "nanomitter"
"""The queue group of every responder: the server hands each request to one member."""
NO_RESPONDERS_STATUS = str(NO_RESPONDERS)
"""The status code nats-server answers a request with when nobody subscribes."""


class NoServersError(NanomitterError, ConnectionError):
    """No NATS server in the URL answered (or accepted our credentials) in time."""


class PayloadTooLargeError(EventTooLargeError):
    """The encoded data is larger than the server's ``max_payload``."""


# ---------------------------------------------------------------------------- the URL


@dataclass(frozen=True)
class Servers:
    """The server list and credentials of a ``nats://`` or ``tls://`` URL."""

    urls: tuple[str, ...]
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, scheme: str, address: str) -> Servers:
        """``[user:pass@|token@]host[:port][,[nats://]host[:port]...]`` -> servers."""
        urls: list[str] = []
        credentials: set[str] = set()
        for given in address.split(","):
            piece = given.strip().rstrip("/")
            piece_scheme = scheme
            if "://" in piece:
                piece_scheme, piece = piece.split("://", 1)
                if piece_scheme not in NATS_SCHEMES:
                    raise InvalidOptionError(
                        f"server {piece_scheme}://... in a NATS URL: each server is "
                        "host:port, nats://host:port or tls://host:port"
                    )
            creds, at, host = piece.rpartition("@")
            if at:
                credentials.add(creds)
            host = host or "127.0.0.1"
            if not host.endswith("]") and ":" in host:
                port = host.rpartition(":")[2]
                if not port.isdigit() or not 0 < int(port) < 65536:
                    if not at and "@" in address:  # "user:pa,ss@host": a comma in the password
                        raise InvalidOptionError(
                            "a NATS server address has a bad port, perhaps a ',' in the "
                            "user name or password: percent-encode it as %2C (servers are "
                            "separated by commas)"
                        )
                    raise InvalidOptionError(f"bad port {port!r} in NATS server {host!r}")
            else:
                host = f"{host}:{DEFAULT_PORT}"
            urls.append(f"{'tls' if scheme == 'tls' else piece_scheme}://{host}")
        if len(credentials) > 1:
            raise InvalidOptionError(
                "every server in a NATS URL must carry the same credentials (or only the first)"
            )
        user = password = token = None
        if credentials:
            creds = credentials.pop()
            if ":" in creds:
                user, _, password = (unquote(part) for part in creds.partition(":"))
            else:
                token = unquote(creds)
        return cls(tuple(urls), user, password, token)


def _tls_context(url: BusURL) -> ssl.SSLContext | None:
    """An SSL context from ``tls_ca``/``tls_cert``/``tls_key`` (``tls://`` needs none)."""
    wanted = url.scheme == "tls" or any(
        url.options.get(name) for name in ("tls_ca", "tls_cert", "tls_key")
    )
    if not wanted:
        return None
    for name in ("tls_ca", "tls_cert", "tls_key"):
        path = url.options.get(name)
        if path and not Path(path).is_file():
            raise InvalidOptionError(f"{name}: no such file {path!r} (in {url})")
    cert, key = url.options.get("tls_cert"), url.options.get("tls_key")
    if bool(cert) != bool(key):
        raise InvalidOptionError(f"tls_cert and tls_key go together (in {url})")
    context = ssl.create_default_context(cafile=url.options.get("tls_ca") or None)
    if cert and key:
        context.load_cert_chain(cert, key)
    return context


# ---------------------------------------------------------------------------- metadata


@dataclass(frozen=True)
class _Meta:
    """What a message's headers say, minus the sequence number (cached per header block)."""

    sender: str
    codec: PayloadCodec | None
    problem: str = ""
    """Why the message cannot be used ("" if it can)."""
    seq: int = 0
    """Only for header blocks parsed whole (the sequence header not last)."""
    declared: bool = False
    """A Content-Type was given (then an empty body is an error, not ``None``)."""
    status: str = ""
    """The status code of a NATS status message (e.g. ``503``: no responders)."""


# ---------------------------------------------------------------------------- transport


class NatsTransport(Transport):
    schemes: ClassVar[tuple[str, ...]] = NATS_SCHEMES
    options: ClassVar[Mapping[str, str]] = {
        "codec": "body format of emitted events: json (default) or msgpack",
        "prefix": "subject namespace: topic T travels as PREFIX.T (default: none)",
        "name": "connection name shown by the server (default: the service name)",
        "connect_timeout": "seconds to find a server when opening (default 10)",
        "reconnect_ms": "pause before retrying a server that just failed (default 500)",
        "max_reconnects": (
            "reconnect attempts per server before giving up; -1 = forever (default), 0 = never"
        ),
        "ping_interval": "seconds between pings that detect a dead server (default 10)",
        "buffer": f"bytes kept for the server while disconnected (default {DEFAULT_BUFFER}); "
        "emits beyond it are dropped and counted",
        "inbox": f"received events waiting for dispatch (default {DEFAULT_INBOX})",
        "send_timeout": "seconds emit waits for a full buffer to drain (default 5)",
        "linger": "seconds close waits for the server to confirm what was emitted (default 2)",
        "creds": "NATS credentials file (JWT + nkey seed)",
        "nkey": "file holding an nkey seed",
        "tls_ca": "PEM CA the server's certificate must chain to",
        "tls_cert": "PEM client certificate (servers that verify clients)",
        "tls_key": "PEM private key of tls_cert",
        "tls_server_name": "name expected in the server's certificate (default: the host)",
    }
    capabilities: ClassVar[Capabilities] = Capabilities(
        echoes_to_sender=False,
        filters_by_interest=True,
        raw_frames=True,
        crosses_processes=True,
        balances_requests=True,
        backends=frozenset({"asyncio"}),
    )

    def __init__(
        self,
        url: BusURL,
        *,
        codec: str = "json",
        prefix: str = "",
        name: str = "",
        connect_timeout: float = 10.0,
        reconnect_ms: int = 500,
        max_reconnects: int = -1,
        ping_interval: float = 10.0,
        buffer: int = DEFAULT_BUFFER,
        inbox: int = DEFAULT_INBOX,
        send_timeout: float = 5.0,
        linger: float = 2.0,
    ) -> None:
        self.url = url
        self.servers = Servers.parse(url.scheme, url.address)
        self.payload_codec = get_payload_codec(codec)
        if prefix:
            try:
                validate_pattern(prefix)
            except ValueError as exc:
                raise InvalidOptionError(f"prefix={prefix!r}: {exc}") from None
            if "*" in prefix.split(".") or ">" in prefix.split("."):
                raise InvalidOptionError(f"prefix={prefix!r} may not contain wildcards")
        self.prefix = prefix
        self.name = name
        self.connect_timeout = connect_timeout
        self.reconnect_ms = reconnect_ms
        self.max_reconnects = max_reconnects
        self.ping_interval = ping_interval
        self.buffer = buffer
        self.inbox_capacity = inbox
        self.send_timeout = send_timeout
        self.linger = linger
        self.tls = _tls_context(url)
        self.tls_server_name = url.options.get("tls_server_name") or None
        self.creds = url.options.get("creds") or None
        self.nkey = url.options.get("nkey") or None
        for option, path in (("creds", self.creds), ("nkey", self.nkey)):
            if path is not None and not Path(path).is_file():
                raise InvalidOptionError(f"{option}: no such file {path!r} (in {url})")
        if self.nkey is not None:
            _check_nkey_seed(self.nkey)
        self.client: BusClient | None = None
        self._connect_errors: list[BaseException] = []
        self._background: asyncio.Task[None] | None = None
        self._closed = False
        self._counters = Counters()
        self._report: Callable[[Problem], None] = lambda problem: None
        self._sender = ""
        # interest
        self._wanted: frozenset[str] = frozenset()
        self._subscriptions: dict[str, Any] = {}  # pattern -> nats Subscription, oldest first
        self._queue_sids: set[int] = set()  # responders' subscriptions (in the queue group)
        self._reconcile_done: anyio.Event | None = None
        self._reconciling = False
        self._interest_error: BaseException | None = None
        self._refused_subjects: dict[str, PermissionDenied] = {}  # since the last (re)connect
        # receiving
        self._ready: list[DistributedEvent] = []
        self._readable: anyio.Event | None = None
        self._room: anyio.Event | None = None  # nats-py's reader waits on it when inbox is full
        self._owners: dict[bytes, tuple[str, int]] = {}  # subject -> (topic, owner sid)
        self._heads: dict[bytes, _Meta] = {}
        self._content_types = by_content_type()
        self._raw_meta = _Meta("", self.payload_codec)
        self._plain = PlainRequests()
        self._overflowing = False
        # sending
        self._subjects: dict[str, bytes] = {}
        self._own_head = b""
        self._drop_reported = False
        # figures
        self.published = 0
        self.send_dropped = 0
        self.received = 0
        self.recv_dropped = 0
        self.after_close = 0
        self.duplicates_skipped = 0
        self.plumbing_skipped = 0
        self.disconnects = 0

    @classmethod
    def from_url(cls, url: BusURL) -> NatsTransport:
        return cls(
            url,
            codec=url.choice_option("codec", list(PAYLOAD_CODECS), "json"),
            prefix=url.get("prefix", ""),
            name=url.get("name", ""),
            connect_timeout=url.float_option("connect_timeout", 10.0),
            reconnect_ms=url.int_option("reconnect_ms", 500, minimum=0),
            max_reconnects=url.int_option("max_reconnects", -1, minimum=-1),
            ping_interval=url.float_option("ping_interval", 10.0, minimum=0.1),
            buffer=url.int_option("buffer", DEFAULT_BUFFER, minimum=0),
            inbox=url.int_option("inbox", DEFAULT_INBOX, minimum=1),
            send_timeout=url.float_option("send_timeout", 5.0),
            linger=url.float_option("linger", 2.0),
        )

    # ------------------------------------------------------------------ lifecycle

    async def open(self, context: TransportContext) -> None:
        backend = current_backend()
        if backend != "asyncio":
            raise UnsupportedBackendError(
                f"{self.url.scheme}:// runs on asyncio only (nats-py is built on asyncio), "
                f"not on {backend}: run this program under asyncio (anyio.run(main, "
                "backend='asyncio')), or use an nng (tcp://) or ZeroMQ (zmq+tcp://) URL on trio"
            )
        self._counters = context.counters
        self._report = context.report
        self._sender = context.sender
        self._own_head = self._head_prefix(context.sender)
        client = BusClient(require_tls=self.tls is not None)
        client.on_sink_error = self._sink_failed
        client.wait_for_room = self._wait_for_room
        options: dict[str, Any] = {
            "servers": list(self.servers.urls),
            "name": self.name or context.service or f"nanomitter-{context.sender}",
            "no_echo": True,
            "connect_timeout": max(1, round(min(self.connect_timeout, 5))),
            "reconnect_time_wait": self.reconnect_ms / 1000,
            "max_reconnect_attempts": self.max_reconnects,
            "ping_interval": self.ping_interval,
            "max_outstanding_pings": 2,
            "pending_size": self.buffer,
            "flush_timeout": self.send_timeout,
            "allow_reconnect": True,
            "error_cb": self._on_error,
            "disconnected_cb": self._on_disconnected,
            "reconnected_cb": self._on_reconnected,
            "closed_cb": self._on_closed,
            "user": self.servers.user,
            "password": self.servers.password,
            "token": self.servers.token,
            "user_credentials": self.creds,
            "nkeys_seed": self.nkey,
        }
        if self.tls is not None:
            options["tls"] = self.tls
            options["tls_hostname"] = self.tls_server_name
        self._connect_errors = []
        try:
            with anyio.fail_after(self.connect_timeout):
                await client.connect(**options)  # tries the servers in turn until the deadline
        except TimeoutError:
            await self._abandon(client)
            raise self._no_servers(f"none answered within {self.connect_timeout} s") from None
        except NoServersError:
            await self._abandon(client)
            raise
        except (OSError, nats_errors.Error) as exc:
            await self._abandon(client)
            raise self._no_servers(_describe(exc)) from None
        self.client = client
        if self.max_reconnects == 0:  # nats-py reads 0 attempts as "forever"
            client.options["allow_reconnect"] = False  # (opening was retried regardless)
        await self._reconcile()
        try:
            await client.flush_in_order(self.connect_timeout)  # listeners added before open work
        except (nats_errors.Error, TimeoutError, OSError) as exc:
            self.client = None
            await self._abandon(client)
            raise NoServersError(
                f"the NATS server at {self.address} accepted the connection but did not "
                f"answer within {self.connect_timeout} s ({_describe(exc)}): is it overloaded, "
                "or not a NATS server?"
            ) from None

    def _refused(self) -> str:
        return (
            f"the NATS server at {self.address} refused this connection's credentials "
            "(authorization violation): check the user/password or token in the URL, or "
            "the creds/nkey file"
        )

    def _every_server_refused_tls(self) -> bool:
        """The latest attempt at each server of the list ended in a TLS failure (a bad
        certificate on either side): waiting for ``connect_timeout`` cannot help. One server
        with a bad certificate among good ones is only retried, like an unreachable one."""
        count = len(self.servers.urls)
        latest = self._connect_errors[-count:]
        return len(latest) == count and all(isinstance(e, ssl.SSLError) for e in latest)

    def _tls_refused(self, exc: BaseException) -> str:
        if isinstance(exc, ssl.SSLCertVerificationError):
            return (
                f"the certificate of the NATS server at {self.address} failed verification "
                f"({_describe(exc)}): check tls_ca (the CA that signed the server's "
                "certificate) and tls_server_name"
            )
        return (
            f"the NATS server at {self.address} refused the TLS handshake ({_describe(exc)}): "
            "check tls_cert and tls_key (a client certificate signed by a CA the server "
            "trusts) and tls_ca"
        )

    def _no_servers(self, why: str) -> NoServersError:
        if any(_is_auth_error(exc) for exc in self._connect_errors):
            return NoServersError(self._refused())
        errors = self._connect_errors
        last = f"; last error: {_describe(errors[-1])}" if errors else ""
        return NoServersError(
            f"cannot reach a NATS server at {self.address}: {why}{last}. Is nats-server "
            "running there (and listening on that port)?"
        )

    async def _abandon(self, client: BusClient) -> None:
        self._closed = True
        with anyio.CancelScope(shield=True), anyio.move_on_after(2):
            await client.close()

    async def aclose(self) -> None:
        """Wait (up to ``linger`` s) until the server confirms everything sent, then close."""
        if self._closed:
            return
        self._closed = True
        self._make_room()  # nats-py's reader must run for the flush below
        client, self.client = self.client, None
        background, self._background = self._background, None
        if background is not None and not background.done():
            background.cancel()
        if client is not None:
            with anyio.CancelScope(shield=True):
                if client.is_connected:
                    with anyio.move_on_after(self.linger):
                        try:
                            await client.flush_in_order(self.linger)
                        except (nats_errors.Error, OSError, TimeoutError) as exc:
                            logger.debug("flush before close failed: %s", _describe(exc))
                if not client.is_connected:
                    self._abandon_buffer(client)
                with anyio.move_on_after(max(self.linger, 1)):
                    try:
                        await client.close()
                    except (nats_errors.Error, OSError) as exc:
                        logger.debug("closing %s: %s", self.address, _describe(exc))
        self._wake_reader()

    def _abandon_buffer(self, client: BusClient) -> None:
        """Closing while disconnected: what waits for the server is lost; count it."""
        lost = client.discard_pending()
        if lost:
            self.send_dropped += lost
            self._counters.dropped += lost
            logger.warning(
                "closed while disconnected from %s: %d emitted events never reached a server "
                "(counted in dropped)",
                self.address,
                lost,
            )

    # ------------------------------------------------------------------ connection events

    async def _on_error(self, exc: Exception) -> None:
        if self.client is None and not self._closed:  # opening: open() reports it
            self._connect_errors.append(exc)
            if _is_auth_error(exc):  # retrying cannot help; raised out of client.connect()
                raise NoServersError(self._refused())
            if self._every_server_refused_tls():
                raise NoServersError(self._tls_refused(exc))
            return
        if isinstance(exc, (OSError, nats_errors.NoServersError, nats_errors.StaleConnectionError)):
            logger.debug("NATS connection to %s: %s", self.address, _describe(exc))
            return
        denied = _permission_denied(exc, self.address)
        if denied is not None:
            # nats-py calls this from its reader, in the server's order: a refused SUB is
            # recorded before the PONG that ends sync_interest()'s flush
            if denied.action == "subscribe":
                self._refused_subjects[denied.subject] = denied
            self._report(denied)
            return
        logger.warning("NATS client error on %s: %s", self.address, _describe(exc))

    async def _on_disconnected(self) -> None:
        if self._closed or self.client is None:
            return
        self.disconnects += 1
        self._report(ConnectionStateChanged("disconnected", self.address))

    async def _on_reconnected(self) -> None:
        client = self.client
        if self._closed or client is None:
            return
        self._owners.clear()
        self._refused_subjects.clear()  # subscriptions are sent again: refusals come again
        self._report(ConnectionStateChanged("reconnected", self._connected_to(client)))

    async def _on_closed(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._report(ConnectionStateChanged("closed", self.address, "reconnect attempts ran out"))
        self._wake_reader()

    @staticmethod
    def _connected_to(client: BusClient) -> str:
        url = client.connected_url
        if url is None:
            return "?"
        return f"{url.scheme}://{url.hostname}:{url.port}"

    # ------------------------------------------------------------------ interest

    def set_interest(self, patterns: frozenset[str]) -> None:
        """Subscribe each pattern once (in the background); ``sync_interest`` waits for it."""
        self._wanted = patterns
        if self.client is not None and not self._reconciling and not self._closed:
            self._reconciling = True
            self._reconcile_done = anyio.Event()
            self._background = asyncio.get_running_loop().create_task(self._reconcile())

    async def sync_interest(self) -> None:
        """Return once the server has every subscription the listeners need.

        On a cluster, other servers learn of a new subscription from this one over their
        routes, asynchronously (within a millisecond on a LAN).
        """
        client = self.client
        if client is None or self._closed:
            raise anyio.ClosedResourceError
        if self._reconcile_done is not None:
            await self._reconcile_done.wait()
        if self._interest_error is not None:
            error, self._interest_error = self._interest_error, None
            raise NanomitterError(f"subscribing on {self.address} failed: {error}") from error
        if client.is_connected:
            await client.flush_in_order(self.connect_timeout)
        for pattern in sorted(self._wanted):
            refused = self._refused_subjects.get(self._subject_of(pattern))
            if refused is not None:
                raise PermissionDenied(refused.action, refused.subject, refused.address)

    async def _reconcile(self) -> None:
        """Bring the NATS subscriptions in line with the wanted patterns, oldest kept."""
        client = self.client
        try:
            while client is not None and not self._closed:
                wanted = self._wanted
                current = set(self._subscriptions)
                for pattern in sorted(wanted - current):
                    queue = QUEUE_GROUP if pattern.startswith(ASK) else ""
                    subscription = await client.subscribe_bus(
                        self._subject_of(pattern), self._sink, queue=queue
                    )
                    self._subscriptions[pattern] = subscription
                    if queue:
                        self._queue_sids.add(subscription._id)
                    self._owners.clear()  # who delivers which subject may change
                for pattern in current - wanted:
                    subscription = self._subscriptions.pop(pattern)
                    self._queue_sids.discard(subscription._id)
                    self._owners.clear()  # who delivers which subject may change
                    await client.unsubscribe_bus(subscription)
                if self._wanted == wanted:
                    break
        except (nats_errors.Error, OSError) as exc:
            self._interest_error = exc
            logger.warning("could not update subscriptions on %s: %s", self.address, exc)
        finally:
            self._reconciling = False
            done = self._reconcile_done
            if done is not None:
                done.set()

    def _subject_of(self, pattern: str) -> str:
        subject = ">" if pattern == ANY else pattern
        return f"{self.prefix}.{subject}" if self.prefix else subject

    # ------------------------------------------------------------------ sending

    def _head_prefix(self, sender: str) -> bytes:
        """Headers up to the sequence number's value (which is last, for fast parsing)."""
        return (
            f"NATS/1.0\r\n{CONTENT_TYPE_HEADER}: {self.payload_codec.content_type}\r\n"
            f"{SENDER_HEADER}: {sender}\r\n{SEQ_HEADER}: "
        ).encode()

    def _subject_bytes(self, topic: str) -> bytes:
        subject = self._subjects.get(topic)
        if subject is None:
            if len(self._subjects) >= MAX_CACHED:
                self._subjects.clear()
            text = f"{self.prefix}.{topic}" if self.prefix else topic
            subject = self._subjects[topic] = text.encode()
        return subject

    def _command(self, event: DistributedEvent) -> bytes:
        """The HPUB (or, without metadata, PUB) command for ``event``; raises on bad data."""
        payload = self.payload_codec.encode(event.topic, event.data)
        client = self.client
        if client is None or self._closed:
            raise anyio.ClosedResourceError
        if len(payload) > client.max_payload:
            raise PayloadTooLargeError(
                event.topic,
                len(payload),
                client.max_payload,
                "the NATS server's max_payload: raise it in the nats-server config, or send "
                "a reference to the data instead",
            )
        if event.topic[:2] == REPLY[:2]:
            plain = self._plain.answer(event)  # to a foreign client's msg.reply
            if plain is not None:
                return plain
        subject = self._subject_bytes(event.topic)
        if event.sender == self._sender:
            head = self._own_head + b"%d\r\n\r\n" % event.seq
        elif event.sender or event.seq:
            head = self._head_prefix(event.sender) + b"%d\r\n\r\n" % event.seq
        else:
            return b"PUB %b %d\r\n%b\r\n" % (subject, len(payload), payload)
        size = len(head)
        if event.topic[:2] == ASK[:2]:  # the cheap test first (reply_topic checks it all)
            # a request or survey: NATS's own reply subject, so the server can answer
            # "no responders" (503) at once when nobody subscribes
            reply = reply_topic(event)
            if reply:
                subject = b"%b %b" % (subject, self._subject_bytes(reply))
        return b"HPUB %b %d %d\r\n%b%b\r\n" % (subject, size, size + len(payload), head, payload)

    @property
    def max_event_bytes(self) -> int | None:
        """The server's ``max_payload`` (the encoded data; headers ride outside it)."""
        client = self.client
        return None if client is None else client.max_payload

    def send_nowait(self, event: DistributedEvent) -> Awaitable[None] | None:
        command = self._command(event)
        client = self.client
        assert client is not None
        if not client.is_connected:
            if client.is_closed:
                raise NanomitterError(
                    f"cannot emit on {event.topic!r}: the connection to {self.address} is "
                    "closed (reconnect attempts ran out)"
                )
            if not client.room_for(len(command)):
                self._drop_send()
                return None
        pending = client.queue_command(command)
        self.published += 1
        if self._drop_reported and client.is_connected:
            self._drop_reported = False
        return pending

    async def send(self, event: DistributedEvent) -> None:
        pending = self.send_nowait(event)
        if pending is not None:
            await pending

    def _drop_send(self) -> None:
        self.send_dropped += 1
        self._counters.dropped += 1
        if not self._drop_reported:
            self._drop_reported = True
            self._report(
                OverflowProblem(
                    f"the buffer for {self.address} while disconnected "
                    f"({self.buffer} bytes; ?buffer=)",
                    self.buffer,
                )
            )

    async def send_raw(self, frame: bytes) -> None:
        """Publish what a foreign peer would: ``frame`` is an envelope in the msgpack codec.

        An envelope NATS can carry goes out as subject + headers + body; bytes that do not
        decode, or a topic the server would not route (an empty token), go out as the body
        of a JSON message on ``<prefix.>nanomitter.raw``, which receivers must reject.
        """
        client = self.client
        if client is None or self._closed:
            raise anyio.ClosedResourceError
        try:
            decoded = MsgpackCodec().decode(frame)
        except (msgspec.DecodeError, msgspec.ValidationError):
            decoded = None
        if isinstance(decoded, DistributedEvent) and "" not in decoded.topic.split("."):
            command = self._command(decoded)
        else:
            subject = self._subject_bytes("nanomitter.raw")
            head = f"NATS/1.0\r\n{CONTENT_TYPE_HEADER}: application/json\r\n\r\n".encode()
            size = len(head)
            command = b"HPUB %b %d %d\r\n%b%b\r\n" % (
                subject,
                size,
                size + len(frame),
                head,
                frame,
            )
        pending = client.queue_command(command)
        if pending is not None:
            await pending
        await anyio.lowlevel.checkpoint()

    # ------------------------------------------------------------------ receiving

    def _sink(self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes) -> None:
        """One message of a bus subscription, straight from nats-py's parser."""
        owner = self._owners.get(subject)
        if owner is None:
            owner = self._resolve(subject, sid)
        topic, owner_sid = owner
        if owner_sid != sid and not (owner_sid == _QUEUED and sid in self._queue_sids):
            if owner_sid == _SKIP:
                self.plumbing_skipped += 1
            else:
                self.duplicates_skipped += 1
            return
        if headers:
            head, mark, tail = headers.rpartition(_SEQ_MARK)
            if mark and tail[-4:] == _END and _is_seq(tail[:-4]):
                meta = self._heads.get(head)
                if meta is None:
                    meta = self._parse_head(head + _END)
                seq = int(tail[:-4])
            else:
                meta = self._parse_head(headers)
                seq = meta.seq
        else:
            meta, seq = self._raw_meta, 0
        codec = meta.codec
        if codec is None:
            if meta.status == NO_RESPONDERS_STATUS and topic.startswith(REPLY) and not data:
                self._push(DistributedEvent(topic=topic, data={"status": NO_RESPONDERS}))
                return
            self._reject(meta.problem, subject, data, topic, meta.sender)
            return
        if data:
            try:
                value = codec.decode(data)
            except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
                self._reject(f"{codec.name} body: {exc}", subject, data, topic, meta.sender)
                return
        elif meta.declared:
            self._reject(f"empty body declared as {codec.content_type}", subject, data)
            return
        else:
            value = None
        if reply and PlainRequests.is_plain(topic, reply, meta.sender):
            self._push(self._plain.accept(topic, reply, value, codec))  # nc.request(...)
            return
        self._push(DistributedEvent(topic=topic, data=value, sender=meta.sender, seq=seq))

    def _push(self, event: DistributedEvent) -> None:
        self.received += 1
        if self._closed:  # arrived while closing (the flush): never dispatched, not a drop
            self.after_close += 1
            return
        ready = self._ready
        if len(ready) >= self.inbox_capacity:
            self._overflow()
            return
        ready.append(event)
        readable = self._readable
        if readable is not None:
            self._readable = None
            readable.set()

    def _resolve(self, subject: bytes, sid: int) -> tuple[str, int]:
        """The topic of ``subject`` and the sid whose copy of it is delivered (cached)."""
        text = subject.decode("utf-8", "replace")
        owner_sid = _SKIP
        if self.prefix:
            head = self.prefix + "."
            text = text[len(head) :] if text.startswith(head) else ""
        if text.startswith(ASK):
            owner_sid = _QUEUED  # a copy through a plain subscription (bare "*") is not ours
        elif text and not text.startswith(("$", "_INBOX.")):
            for pattern, subscription in self._subscriptions.items():
                if pattern_matches(pattern, text):
                    owner_sid = subscription._id
                    break
            else:  # no pattern explains it: take the first copy (the core rejects the topic)
                owner_sid = sid
        owner = (text, owner_sid)
        if len(self._owners) >= MAX_CACHED:
            self._owners.clear()
        self._owners[subject] = owner
        return owner

    def _parse_head(self, block: bytes) -> _Meta:
        """Read a whole header block (the slow path; results cached when seq is last)."""
        lines = block.split(b"\r\n")
        if not lines[0].startswith(b"NATS/1.0") or lines[0].strip() != b"NATS/1.0":
            status = lines[0][8:].strip().decode("latin-1")
            code = status.split(" ", 1)[0]
            return _Meta("", None, f"a NATS status message ({status}), not an event", status=code)
        values: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if colon:
                values[name.strip().lower().decode("latin-1")] = value.strip().decode(
                    "utf-8", "replace"
                )
        sender = values.get(SENDER_HEADER.lower(), "")
        seq_text = values.get(SEQ_HEADER.lower(), "0")
        if not _is_seq(seq_text.encode("utf-8", "replace")):
            return _Meta(sender, None, f"{SEQ_HEADER} {_clip(seq_text)} is not a number")
        content_type = values.get(CONTENT_TYPE_HEADER.lower())
        if content_type is None:
            codec: PayloadCodec | None = self.payload_codec
        else:
            codec = self._content_types.get(content_type.split(";", 1)[0].strip().lower())
            if codec is None:
                known = ", ".join(sorted(self._content_types))
                return _Meta(
                    sender,
                    None,
                    f"unsupported {CONTENT_TYPE_HEADER} {_clip(content_type)} ({known})",
                )
        meta = _Meta(sender, codec, seq=int(seq_text), declared=content_type is not None)
        if len(self._heads) >= MAX_CACHED:
            self._heads.clear()
        self._heads[block[: -len(_END)] if block.endswith(_END) else block] = meta
        return meta

    def _sink_failed(self, exc: Exception, subject: bytes, data: bytes) -> None:
        """A message broke the sink itself (a bug, or input no check foresaw): counted like
        a bad frame; the connection keeps reading."""
        self._reject(f"could not be handled ({type(exc).__name__}: {exc})", subject, data)

    def _reject(
        self, reason: str, subject: bytes, data: bytes, topic: str = "", sender: str = ""
    ) -> None:
        """Count and report a message that cannot be used. A reply to one of our requests
        also reaches the core, so the request fails at once instead of timing out."""
        self._counters.decode_errors += 1
        where = subject.decode("utf-8", "replace")
        self._report(FrameDecodeError(f"message on {where!r}: {reason}", data))
        if topic.startswith(REPLY):
            self._push(DistributedEvent(topic=topic, data={UNDECODABLE: reason}, sender=sender))

    def _overflow(self) -> None:
        # not in counters.dropped: the sender numbered the event, so the core counts it in
        # ``lost`` when the sender's next one arrives (counting both would report it twice)
        self.recv_dropped += 1
        if not self._overflowing:
            self._overflowing = True
            self._report(OverflowProblem("the NATS receive", self.inbox_capacity))

    def _wake_reader(self) -> None:
        readable, self._readable = self._readable, None
        if readable is not None:
            readable.set()
        self._make_room()

    def _wait_for_room(self) -> Awaitable[None] | None:
        """Backpressure: with ``inbox`` events waiting, nats-py stops reading the socket
        until the emitter takes a batch (the server then sees a slow consumer, as it would
        see any client that cannot keep up), instead of this queue dropping."""
        if len(self._ready) < self.inbox_capacity or self._closed:
            return None
        room = self._room
        if room is None:
            room = self._room = anyio.Event()
        return room.wait()

    def _make_room(self) -> None:
        room, self._room = self._room, None
        if room is not None:
            room.set()

    async def receive(self) -> list[DistributedEvent]:
        if self._closed:
            # the emitter is closing: what was read but not dispatched is not delivered now
            # (its async listeners are stopping); count it rather than half-deliver it
            self._counters.dropped += len(self._ready)
            self._ready = []
            raise anyio.EndOfStream
        if self._ready:
            # let async listeners' tasks run between batches under a flood, as a wait would
            await anyio.lowlevel.checkpoint()
        while not self._ready:
            if self._closed:
                raise anyio.EndOfStream
            readable = self._readable = anyio.Event()
            await readable.wait()
        ready = self._ready
        self._overflowing = False
        if len(ready) <= MAX_BATCH:
            self._ready = []
            batch = ready
        else:
            self._ready = ready[MAX_BATCH:]
            batch = ready[:MAX_BATCH]
        if self._room is not None and len(self._ready) < self.inbox_capacity:
            self._make_room()
        return batch

    # ------------------------------------------------------------------ reporting

    @property
    def address(self) -> str:
        return redact(self.url.raw or f"{self.url.scheme}://{self.url.address}").split("?")[0]

    def statistics(self) -> Mapping[str, int]:
        client = self.client
        return {
            "connected": int(client is not None and client.is_connected),
            "subscriptions": len(self._subscriptions),
            "published": self.published,
            "send_dropped": self.send_dropped,
            "pending_bytes": client.pending_bytes if client is not None else 0,
            "received": self.received,
            "recv_dropped": self.recv_dropped,
            "after_close": self.after_close,
            "duplicates_skipped": self.duplicates_skipped,
            "plumbing_skipped": self.plumbing_skipped,
            "disconnects": self.disconnects,
            "reconnects": int(client.stats["reconnects"]) if client is not None else 0,
        }


def _check_nkey_seed(path: str) -> None:
    """Refuse a seed file that holds no seed here, with one line (the seed is never shown)."""
    import nkeys  # nats-py[nkeys]; only members that use nkey auth need it

    try:
        nkeys.from_seed(bytearray(Path(path).read_bytes().strip()))
    except Exception:
        raise InvalidOptionError(
            f"nkey: {path!r} does not hold a valid nkey seed (one line starting with 'SU'; "
            "make one with `nk -gen user`)"
        ) from None


def _clip(text: str, limit: int = 60) -> str:
    """A header value quoted in a problem report, cut short (it can be 1 MiB long)."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} chars)"


def _is_seq(text: bytes) -> bool:
    """A sequence number we accept: ASCII digits that fit in 64 bits (``int()`` would take
    '²' for a digit and refuse 5000 of them)."""
    return 0 < len(text) <= 19 and text.isascii() and text.isdigit()


def _is_auth_error(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, nats_errors.AuthorizationError) or "authorization" in text


_PERMISSION_VIOLATION = re.compile(
    r'permissions violation for (subscription|publish) to "([^"]*)"', re.IGNORECASE
)


def _permission_denied(exc: BaseException, address: str) -> PermissionDenied | None:
    """The server's ``-ERR 'Permissions Violation for Subscription to "SUBJECT"'`` (or
    ``Publish to``), as nats-py hands it to the error callback; None for anything else."""
    found = _PERMISSION_VIOLATION.search(str(exc))
    if found is None:
        return None
    action = "publish" if found.group(1).lower() == "publish" else "subscribe"
    return PermissionDenied(action, found.group(2), address)


def _describe(exc: BaseException) -> str:
    """An exception as text, with any URL credentials masked."""
    text = str(exc) or type(exc).__name__
    return redact(text) if "://" in text else text
