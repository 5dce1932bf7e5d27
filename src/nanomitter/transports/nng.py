"""nng bus0: the seed's transport (``tcp://``, ``ipc://``, ``inproc://``, ``ws://``, ``tls+tcp://``).

Topology: one hub re-broadcasts every message to every other member (a raw bus0 socket
reflected by ``nng_device``, see :mod:`.nng_lowlevel`); every emitter, the hub process's own
included, is a member through an ordinary bus0 socket. ``role=auto`` (the default) is the
seed's rule: bind and become the hub, or connect if the address is taken; when the hub dies,
surviving ``auto`` members elect a new one (the first to bind wins, the others keep dialling).

I/O never uses pynng's ``asend``/``arecv`` (a thread hop per message): we wait on the
socket's pollable fds with ``anyio.wait_readable``/``wait_writable`` and then send/receive
without blocking, draining every ready message before yielding.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Mapping
from functools import partial
from pathlib import Path
from typing import ClassVar

import anyio
import anyio.lowlevel
import pynng

from ..core.codecs import (
    CODECS,
    DEFAULT_MAX_FRAME_BYTES,
    Codec,
    FrameDecoder,
    get_codec,
    within_limit,
)
from ..core.context import YIELD, TransportContext
from ..core.errors import InvalidOptionError, NanomitterError
from ..core.event import DistributedEvent
from .base import MAX_BATCH, Capabilities, Transport, wake_fd_waiters
from .election import Election
from .nng_lowlevel import (
    EAGAIN,
    ECLOSED,
    PeerCallback,
    Receiver,
    Reflector,
    dialer_errors,
    raise_for,
    send_nowait,
)
from .registry import NNG_SCHEMES
from .url import BusURL, host_and_port

logger = logging.getLogger("nanomitter.nng")
ROLES = ("auto", "hub", "node")
JOIN = "$nanomitter.join"
WELCOME = "$nanomitter.welcome"
JOIN_RETRY = 0.1
JOIN_PATIENCE = 2.0
"""Seconds a member waits for the hub to answer its join before it goes on regardless."""
YIELD_INTERVAL = 0.001
"""Seconds of non-blocking sends after which emit yields to the event loop once."""
MAX_BUFFER = 8192
"""nng's largest socket queue (messages)."""
DEFAULT_BUFFER = MAX_BUFFER
"""Messages each socket queues per direction (nng's own default is far smaller). bus0 never
blocks a sender: a member whose queue is full loses what the hub sends it, so a burst must
fit in the hub's queue for that member plus the member's own. The memory is spent only while
messages wait (see docs/reliability.md)."""
WIRE_CAP_FACTOR = 4
"""nng itself refuses frames above this multiple of max_frame_bytes (and drops the pipe)."""


DIALER_LOOK_EVERY = 0.05
"""Seconds between two reads of the dialer's failure counters while a TLS member joins."""


def _dial_hint(errors: dict[str, int]) -> str:
    """What the dialer's counters say about a join that timed out."""
    if errors.get("auth", 0):
        return " (the TLS handshake failed: check tls_cert, tls_key, tls_ca, tls_server_name)"
    if errors.get("refused", 0):
        return f" (nothing listens there: refused {errors['refused']} times)"
    if errors.get("other", 0) or errors.get("proto", 0):
        return " (something there accepts connections and hangs up: TLS on one side only?)"
    return ""


class NoHubError(NanomitterError, ConnectionError):
    """``role=node`` found no hub to join within ``connect_timeout``."""


class NngTransport(Transport):
    schemes: ClassVar[tuple[str, ...]] = NNG_SCHEMES
    options: ClassVar[Mapping[str, str]] = {
        "role": "auto (bind and become the hub, else connect; default), hub, or node",
        "codec": "msgpack (the original nanomitter's format; default) or json",
        "max_frame_bytes": f"largest frame accepted (default {DEFAULT_MAX_FRAME_BYTES})",
        "buffer": f"messages queued per socket and direction (default and most {MAX_BUFFER})",
        "reconnect_ms": "first redial delay after losing the hub (default 100)",
        "election_ms": "how long an auto member waits without a hub before it binds (default 300)",
        "connect_timeout": "seconds a node waits for a hub when it opens (default 10)",
        "linger_ms": "how long close waits for recent sends to leave (default 200)",
        "tls_cert": "PEM certificate of this member (tls+tcp)",
        "tls_key": "PEM private key of this member (tls+tcp)",
        "tls_ca": "PEM CA that peers' certificates must chain to (tls+tcp)",
        "tls_server_name": "name expected in the hub's certificate (default: the URL host)",
    }
    capabilities: ClassVar[Capabilities] = Capabilities(
        echoes_to_sender=True, raw_frames=True, crosses_processes=True
    )

    def __init__(
        self,
        address: str,
        *,
        role: str = "auto",
        codec: str = "msgpack",
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        buffer: int = DEFAULT_BUFFER,
        reconnect_ms: int = 100,
        election_ms: int = 300,
        connect_timeout: float = 10.0,
        linger_ms: int = 200,
        tls: _TlsFiles | None = None,
    ) -> None:
        self.nng_address = address
        self.role = role
        self.codec: Codec = get_codec(codec)
        self.max_frame_bytes = max_frame_bytes
        self.buffer = buffer
        self.reconnect_ms = reconnect_ms
        self.election = Election(election_ms)
        self.connect_timeout = connect_timeout
        self.linger_ms = linger_ms
        self.tls = tls
        self.reflector: Reflector | None = None
        self.on_peer: PeerCallback | None = None
        """Set before ``open()`` to hear ``(joined, address)`` from the hub this member runs
        (``nanomitter hub`` prints them); called from nng's threads, must not block."""
        self._socket: pynng.Bus0 | None = None
        self._decoder: FrameDecoder | None = None
        self._recv_fd = -1
        self._send_fd = -1
        self._send_lock: anyio.Lock | None = None
        self._last_send = 0.0
        self._last_yield = 0.0
        self._receiver: Receiver | None = None
        self._sender = ""
        self._pending: list[DistributedEvent] = []
        self._joined_nonce: str | None = None
        self._join_nonce: str | None = None  # the one we wait for; others' welcomes differ

    @classmethod
    def from_url(cls, url: BusURL) -> NngTransport:
        scheme = url.scheme.removeprefix("nng+")
        tls = _TlsFiles.from_url(url) if scheme == "tls+tcp" else None
        if tls is None and any(name.startswith("tls_") for name in url.options):
            raise InvalidOptionError(f"tls_* options need a tls+tcp:// URL (in {url})")
        if scheme in ("tcp", "tls+tcp", "ws"):
            host_and_port(scheme, url.address)
        return cls(
            f"{scheme}://{url.address}",
            role=url.choice_option("role", ROLES, "auto"),
            codec=url.choice_option("codec", list(CODECS), "msgpack"),
            max_frame_bytes=url.int_option("max_frame_bytes", DEFAULT_MAX_FRAME_BYTES, minimum=64),
            buffer=url.int_option("buffer", DEFAULT_BUFFER, minimum=1, maximum=MAX_BUFFER),
            reconnect_ms=url.int_option("reconnect_ms", 100, minimum=1),
            election_ms=url.int_option("election_ms", 300, minimum=0),
            connect_timeout=url.float_option("connect_timeout", 10.0),
            linger_ms=url.int_option("linger_ms", 200, minimum=0),
            tls=tls,
        )

    # ------------------------------------------------------------------ lifecycle

    async def open(self, context: TransportContext) -> None:
        self._decoder = context.decoder(self.codec, self.max_frame_bytes)
        self._sender = context.sender
        self._send_lock = anyio.Lock()
        dial = self.nng_address
        if self.role in ("auto", "hub") and self._try_become_hub(
            required=self.role == "hub", local=self._local_address()
        ):
            # the hub lives exactly as long as this member: reach it in-process (cheaper and
            # faster than loopback). A member that wins an election later keeps its URL dialer.
            dial = self._local_address()
        socket = pynng.Bus0(
            recv_max_size=self.max_frame_bytes * WIRE_CAP_FACTOR,
            recv_buffer_size=self.buffer,
            send_buffer_size=self.buffer,
            reconnect_time_min=self.reconnect_ms,
            reconnect_time_max=max(self.reconnect_ms, 500),
        )
        try:
            if self.tls is not None and dial == self.nng_address:
                socket.tls_config = self.tls.client_config(self.nng_address)
            dialer = socket.dial(dial, block=False)
            self._recv_fd = socket.recv_fd
            self._send_fd = socket.send_fd
            self._receiver = Receiver(socket)
            self._socket = socket
            await self._wait_for_hub(dialer)
            await self._join()
        except BaseException:
            socket.close()
            self._socket = None
            self._close_reflector()
            raise

    async def _wait_for_hub(self, dialer: pynng.Dialer) -> None:
        """Until the dial has a pipe. A TLS failure ends the wait at once: nng's dialer
        retries it silently, and only its statistics tell."""
        socket = self._socket
        assert socket is not None
        deadline = time.monotonic() + self.connect_timeout
        next_look = time.monotonic() + DIALER_LOOK_EVERY
        while not socket.pipes:
            now = time.monotonic()
            if now > deadline:
                raise NoHubError(
                    f"no hub answered at {self.address} within {self.connect_timeout} s; start "
                    "one (role=hub or role=auto), or check the address, port and TLS files"
                    + _dial_hint(dialer_errors(dialer))
                )
            if self.tls is not None and now >= next_look:
                next_look = now + DIALER_LOOK_EVERY
                if dialer_errors(dialer).get("auth", 0):
                    raise NoHubError(
                        f"the TLS handshake with the hub at {self.address} failed (nng: "
                        "cryptographic error); check the TLS files: every member needs a "
                        "certificate signed by the hub's CA (tls_cert, tls_key), that CA as "
                        "tls_ca, and the hub's name (tls_server_name); or the hub does not use TLS"
                    )
            await anyio.sleep(0.005)  # waiting for nng's background dialer, bounded above

    async def _join(self) -> None:
        """Return once the hub forwards to us: it answers our join (or, if it is an original
        nanomitter master, echoes it). Events that arrive meanwhile are kept for ``receive``.
        """
        if self.reflector is not None:
            # our own hub: its side of our pipe must exist before others' traffic
            with anyio.fail_after(self.connect_timeout):
                while self.reflector.peer_count < 1:  # noqa: ASYNC110 (nng has no awaitable)
                    await anyio.sleep(0.002)
            return
        nonce = self._join_nonce = f"{self._sender}-{random.getrandbits(32):08x}"
        frame = self.codec.encode(
            DistributedEvent(topic=JOIN, data={"nonce": nonce}, sender=self._sender)
        )
        with anyio.move_on_after(JOIN_PATIENCE):
            while self._joined_nonce != nonce:
                await self.send_raw(frame)
                with anyio.move_on_after(JOIN_RETRY):
                    while self._joined_nonce != nonce:
                        self._pending.extend(await self._receive_frames())
            return
        logger.warning(
            "the hub at %s did not answer the join handshake within %s s; going on (is it a "
            "nanomitter hub?)",
            self.address,
            JOIN_PATIENCE,
        )

    def _local_address(self) -> str:
        return f"inproc://nanomitter-hub-{id(self)}"

    def _try_become_hub(self, *, required: bool, local: str | None = None) -> bool:
        """Bind the hub; False if another process has the address (unless ``required``)."""
        addresses = [self.nng_address] if local is None else [self.nng_address, local]
        tls_config = self.tls.server_config() if self.tls is not None else None
        try:
            self.reflector = Reflector(
                addresses,
                recv_max_size=self.max_frame_bytes * WIRE_CAP_FACTOR,
                buffer_size=self.buffer,
                tls_config=tls_config,
                tls_addresses=frozenset({self.nng_address}) if tls_config else frozenset(),
                on_peer=self.on_peer,
                unreported=frozenset(addresses[1:]),  # our own member's in-process pipe
            )
        except (pynng.AddressInUse, pynng.exceptions.AddressInvalid, pynng.NNGException) as exc:
            if required or not _address_taken(exc):
                raise _bind_error(self.address, exc) from exc
            return False
        return True

    async def aclose(self) -> None:
        socket, self._socket = self._socket, None
        if socket is None:
            return
        linger = self._last_send + self.linger_ms / 1000 - time.monotonic()
        if linger > 0:
            await anyio.sleep(linger)  # let recent sends leave nng's queues (bounded)
        wake_fd_waiters(self._recv_fd, self._send_fd)  # they close with the socket
        self._recv_fd = self._send_fd = -1
        socket.close()
        self._close_reflector()
        await anyio.lowlevel.checkpoint()

    def _close_reflector(self) -> None:
        reflector, self.reflector = self.reflector, None
        if reflector is not None:
            reflector.close()

    # ------------------------------------------------------------------ I/O

    async def send(self, event: DistributedEvent) -> None:
        pending = self._send_frame(self._encode(event))
        if pending is not None:
            await pending

    def send_nowait(self, event: DistributedEvent) -> Awaitable[None] | None:
        return self._send_frame(self._encode(event))

    def _encode(self, event: DistributedEvent) -> bytes:
        return within_limit(self.codec.encode(event), event.topic, self.max_frame_bytes)

    @property
    def max_event_bytes(self) -> int:
        return self.max_frame_bytes

    async def send_raw(self, frame: bytes) -> None:
        pending = self._send_frame(frame)
        if pending is not None:
            await pending

    def _send_frame(self, frame: bytes) -> Awaitable[None] | None:
        """Send without blocking; an awaitable only if the socket is full or it is time to yield."""
        socket = self._socket
        if socket is None:
            raise anyio.ClosedResourceError
        error = send_nowait(socket, frame)
        if error:
            if error == EAGAIN:
                return self._send_when_writable(frame)
            if error == ECLOSED:
                raise anyio.ClosedResourceError
            raise_for(error)
        now = self._last_send = time.monotonic()
        if now - self._last_yield >= YIELD_INTERVAL:
            # bus0 never blocks a sender; yield now and then so a tight emit loop does not
            # starve this process's own receive loops (and so trio sees a checkpoint)
            self._last_yield = now
            return YIELD
        return None

    async def _send_when_writable(self, frame: bytes) -> None:
        assert self._send_lock is not None
        async with self._send_lock:  # one waiter per fd (trio insists)
            while True:
                socket = self._socket
                if socket is None:
                    raise anyio.ClosedResourceError
                try:
                    socket.send(frame, block=False)
                    self._last_send = time.monotonic()
                    return
                except pynng.TryAgain:
                    await anyio.wait_writable(self._send_fd)
                except pynng.Closed:
                    raise anyio.ClosedResourceError from None

    async def receive(self) -> list[DistributedEvent]:
        if self._pending:
            pending, self._pending = self._pending, []
            return pending
        return await self._receive_frames()

    async def _receive_frames(self) -> list[DistributedEvent]:
        decoder = self._decoder
        assert decoder is not None
        decode_into = decoder.decode_into
        events: list[DistributedEvent] = []
        waited = False
        while True:
            receiver = self._receiver
            if self._socket is None or receiver is None:
                raise anyio.EndOfStream
            error = receiver.receive(decode_into, events)
            if error:
                if error == EAGAIN:
                    if events:
                        break
                    await self._wait_readable()
                    waited = True
                    continue
                if error == ECLOSED:
                    raise anyio.EndOfStream
                raise_for(error)
            if events and events[-1].topic[:1] == "$":
                self._control(events.pop())
            if len(events) >= MAX_BATCH:
                break
        if not waited:
            await anyio.lowlevel.checkpoint()  # busy bus: still let other tasks run
        return events

    def _control(self, event: DistributedEvent) -> None:
        """Handle the join handshake; other control topics are ignored."""
        nonce = event.data.get("nonce") if isinstance(event.data, dict) else None
        if not isinstance(nonce, str):
            return
        if nonce == self._join_nonce and (
            event.topic == WELCOME or (event.topic == JOIN and event.sender == self._sender)
        ):
            self._joined_nonce = nonce  # welcomed, or our join echoed by an original master
        elif event.topic == JOIN and self.reflector is not None and self._socket is not None:
            welcome = DistributedEvent(topic=WELCOME, data={"nonce": nonce}, sender=self._sender)
            with contextlib.suppress(pynng.NNGException):
                self._socket.send(self.codec.encode(welcome), block=False)

    async def _wait_readable(self) -> None:
        if self.role != "auto" or self.reflector is not None:
            await anyio.wait_readable(self._recv_fd)
            return
        # an auto member without a hub binds after election_ms (+ jitter, so one wins)
        with anyio.move_on_after(self.election.patience):
            await anyio.wait_readable(self._recv_fd)
            self.election.hub_seen()
            return
        socket = self._socket
        if socket is not None:
            self.election.check(
                not socket.pipes, partial(self._try_become_hub, required=False), self.address
            )

    # ------------------------------------------------------------------ reporting

    @property
    def is_hub(self) -> bool:
        return self.reflector is not None

    @property
    def address(self) -> str:
        return self.nng_address

    def statistics(self) -> Mapping[str, int]:
        socket = self._socket
        return {
            "hub": int(self.reflector is not None),
            "hub_peers": self.reflector.peer_count if self.reflector is not None else 0,
            "pipes": len(socket.pipes) if socket is not None else 0,
            "elections_won": self.election.won,
        }


class _TlsFiles:
    """Certificate, key and CA paths for ``tls+tcp://``, read when a socket is configured."""

    def __init__(self, cert: Path, key: Path, ca: Path, server_name: str) -> None:
        self.cert, self.key, self.ca, self.server_name = cert, key, ca, server_name

    @classmethod
    def from_url(cls, url: BusURL) -> _TlsFiles:
        missing = [n for n in ("tls_cert", "tls_key", "tls_ca") if n not in url.options]
        if missing:
            raise InvalidOptionError(
                f"tls+tcp:// needs {', '.join(missing)} (PEM file paths) in {url}; every member "
                "presents a certificate signed by the CA and checks its peers against it"
            )
        cert, key, ca = (Path(url.options[n]) for n in ("tls_cert", "tls_key", "tls_ca"))
        for name, path in (("tls_cert", cert), ("tls_key", key), ("tls_ca", ca)):
            if not path.is_file():
                raise InvalidOptionError(f"{name}: no such file {str(path)!r}")
        host = url.address.rsplit(":", 1)[0].strip("[]") or "localhost"
        files = cls(cert, key, ca, server_name=url.options.get("tls_server_name", host))
        try:  # read the files now: a bad one is a clear error at connect(), not at open
            files.client_config(url.address)
        except (pynng.NNGException, OSError, UnicodeDecodeError):
            raise InvalidOptionError(
                "tls_cert, tls_key and tls_ca must be PEM files nng can use (a certificate, "
                f"its private key, the CA certificate): {cert}, {key}, {ca} are not"
            ) from None
        return files

    def _strings(self) -> tuple[str, str, str]:
        return self.cert.read_text(), self.key.read_text(), self.ca.read_text()

    def server_config(self) -> pynng.TLSConfig:
        cert, key, ca = self._strings()
        return pynng.TLSConfig(
            pynng.TLSConfig.MODE_SERVER,
            own_cert_string=cert,
            own_key_string=key,
            ca_string=ca,
            auth_mode=pynng.TLSConfig.AUTH_MODE_REQUIRED,
        )

    def client_config(self, address: str) -> pynng.TLSConfig:
        cert, key, ca = self._strings()
        return pynng.TLSConfig(
            pynng.TLSConfig.MODE_CLIENT,
            server_name=self.server_name,
            own_cert_string=cert,
            own_key_string=key,
            ca_string=ca,
            auth_mode=pynng.TLSConfig.AUTH_MODE_REQUIRED,
        )


def _address_taken(exc: BaseException) -> bool:
    return isinstance(exc, pynng.AddressInUse) or "address in use" in str(exc).lower()


def _bind_error(address: str, exc: BaseException) -> NanomitterError:
    if _address_taken(exc):
        return NanomitterError(
            f"cannot become the hub at {address}: the address is in use (another hub runs "
            "there; use role=node or role=auto to join it)"
        )
    return NanomitterError(f"cannot become the hub at {address}: {exc}")
