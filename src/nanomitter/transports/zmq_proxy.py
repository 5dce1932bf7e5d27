"""The ZeroMQ hub: libzmq's XSUB/XPUB proxy in a thread, and the ZAP handler for CURVE.

Nodes publish into the XSUB socket and subscribe at the XPUB socket; ``zmq_proxy_steerable``
moves every message between them without Python touching one. The XSUB side subscribes to
everything, so publishers send each event to the hub once and the XPUB side does the
filtering by the subscribers' prefixes. That keeps the slow-joiner handshake provable: once a
node's own probe has come back through the XPUB side, every subscription the node sent before
it is in force there (see :mod:`.zmq`).

The control socket makes the proxy steerable: ``STATISTICS`` for figures, ``TERMINATE`` to
stop it cleanly so the thread can close its sockets (with linger, so what was forwarded still
leaves) before the context is terminated.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import socket
import struct
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import zmq
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message

logger = logging.getLogger("nanomitter.zmq")
ZAP_ENDPOINT = "inproc://zeromq.zap.01"
ZAP_DOMAIN = b"nanomitter"
_ids = itertools.count()
_STAT_NAMES = (
    "in_messages",
    "in_bytes",
    "subscriptions_up",
    "subscriptions_up_bytes",
    "subscriptions_in",
    "subscriptions_in_bytes",
    "out_messages",
    "out_bytes",
)
"""libzmq's eight STATISTICS figures, in its order: frontend (XSUB) received / sent, then
backend (XPUB) received / sent. Message counts are frames (a nanomitter message has two)."""
PeerCallback = Callable[[bool, str], None]
"""``(joined, address)``: a peer connected to (True) or left (False) the hub. Called from a
monitor thread, so it must be quick and must not block (hand the news to a queue)."""
_PEER_EVENTS = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_MONITOR_STOPPED


@dataclass(frozen=True)
class ServerCurve:
    """The hub's CURVE keys (Z85) and whom it lets in (``None``: any client with a key)."""

    public: bytes
    secret: bytes
    allowed: frozenset[bytes] | None


class ZapHandler:
    """Answers libzmq's ZAP requests for one context from an allow-list of public keys.

    Runs in a thread (ZAP is a REQ/REP conversation on ``inproc://zeromq.zap.01``; libzmq
    asks once per connection, never per message).
    """

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], allowed: frozenset[bytes] | None):
        self.allowed = allowed
        self.accepted = 0
        self.denied = 0
        name = f"inproc://nanomitter-zap-stop-{next(_ids)}"
        self._socket = context.socket(zmq.REP)
        self._stop_rx = context.socket(zmq.PAIR)
        self._stop_tx = context.socket(zmq.PAIR)
        try:
            for sock in (self._socket, self._stop_rx, self._stop_tx):
                sock.linger = 0
            self._socket.bind(ZAP_ENDPOINT)
            self._stop_rx.bind(name)
            self._stop_tx.connect(name)
        except BaseException:
            self._close_sockets()
            raise
        self._thread = threading.Thread(target=self._run, name="nanomitter-zmq-zap", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        poller.register(self._stop_rx, zmq.POLLIN)
        try:
            while True:
                ready = dict(poller.poll())
                if self._stop_rx in ready:
                    return
                if self._socket in ready:
                    self._answer(self._socket.recv_multipart())
        except zmq.ZMQError as exc:  # the context went away under us: nothing left to guard
            logger.debug("ZAP handler stopped: %s", exc)
        finally:
            self._socket.close(0)
            self._stop_rx.close(0)

    def _answer(self, request: list[bytes]) -> None:
        if len(request) < 6:  # not a ZAP request; REP must still answer: refuse
            self._socket.send_multipart([b"1.0", b"", b"400", b"malformed request", b"", b""])
            return
        version, request_id, domain, address, _identity, mechanism = request[:6]
        credentials = request[6:]
        allowed = False
        user = b""
        if mechanism == b"CURVE" and len(credentials) == 1 and len(credentials[0]) == 32:
            key = z85.encode(credentials[0])
            allowed = self.allowed is None or key in self.allowed
            user = key
        if allowed:
            self.accepted += 1
        else:
            self.denied += 1
            logger.info(
                "refused a %s client from %s (domain %r): key not on the allow-list",
                mechanism.decode(errors="replace"),
                address.decode(errors="replace"),
                domain.decode(errors="replace"),
            )
        code, text = (b"200", b"OK") if allowed else (b"400", b"key not allowed")
        self._socket.send_multipart([version, request_id, code, text, user, b""])

    def close(self) -> None:
        """Stop answering; waits for the thread, which closes its sockets."""
        if self._thread.is_alive():
            with contextlib.suppress(zmq.ZMQError):
                self._stop_tx.send(b"STOP")
            self._thread.join(timeout=5)
        self._stop_tx.close(0)

    def _close_sockets(self) -> None:
        for sock in (self._socket, self._stop_rx, self._stop_tx):
            sock.close(0)


class PeerMonitor:
    """Reports the connections one proxy socket accepts and loses (libzmq's socket monitor),
    as ``on_peer(joined, address)`` calls from its own thread.

    With ``own_member_first``, the first connection is the hub process's own member (it
    connects over the network like everyone else, right after the bind): neither its arrival
    nor its departure is reported. Connections are told apart by their fd, unique while open
    (addresses are not: every ipc peer's is empty).
    """

    def __init__(
        self, monitor: zmq.Socket[bytes], on_peer: PeerCallback, *, own_member_first: bool
    ) -> None:
        self._socket = monitor
        self._on_peer = on_peer
        self._addresses: dict[int, str] = {}  # fd -> the peer's address, read on accept
        self._own_fd: int | None = None
        self._own_pending = own_member_first
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nanomitter-zmq-peers", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if not self._socket.poll(100):  # wake now and then to notice close()
                    continue
                event = recv_monitor_message(self._socket)
                kind, fd = event["event"], int(event["value"])
                if kind == zmq.EVENT_MONITOR_STOPPED:  # the proxy socket closed
                    return
                if kind == zmq.EVENT_ACCEPTED and self._own_pending:
                    self._own_pending, self._own_fd = False, fd
                elif kind == zmq.EVENT_ACCEPTED:
                    address = self._addresses[fd] = _peer_address(fd)
                    self._report(True, address)
                elif kind == zmq.EVENT_DISCONNECTED and fd == self._own_fd:
                    self._own_fd = None
                elif kind == zmq.EVENT_DISCONNECTED:
                    self._report(False, self._addresses.pop(fd, ""))
        except zmq.ZMQError as exc:  # the context went away under us
            logger.debug("peer monitor stopped: %s", exc)
        finally:
            self._socket.close(0)

    def _report(self, joined: bool, address: str) -> None:
        try:
            self._on_peer(joined, address)
        except Exception:  # a broken callback must not end the monitoring
            logger.exception("peer callback %r failed", self._on_peer)

    def close(self) -> None:
        """Stop reporting; waits for the thread, which closes the monitor socket."""
        self._stop.set()
        self._thread.join(timeout=5)


def _peer_address(fd: int) -> str:
    """``host:port`` (or the ipc path) of the peer on a libzmq connection; '' if gone."""
    try:
        with socket.socket(fileno=os.dup(fd)) as connection:
            peer = connection.getpeername()
    except OSError:
        return ""
    if isinstance(peer, tuple):
        return f"{peer[0]}:{peer[1]}"
    return str(peer, errors="replace") if isinstance(peer, bytes) else str(peer)


class ProxyBindError(Exception):
    """The proxy could not bind one of its endpoints (``errno`` says why)."""

    def __init__(self, endpoint: str, cause: zmq.ZMQError) -> None:
        self.endpoint = endpoint
        self.errno = cause.errno
        super().__init__(f"cannot bind {endpoint}: {cause}")


class Proxy:
    """Binds XSUB at ``publish_endpoint`` and XPUB at ``subscribe_endpoint``; forwards in a
    thread until :meth:`close`. Raises :class:`ProxyBindError` if it cannot bind.

    With ``on_peer``, every subscriber connection (each nanomitter node has one) the XPUB
    side accepts or loses is reported through a :class:`PeerMonitor` (``own_member_first``:
    except the first, the hub process's own member).
    """

    def __init__(
        self,
        context: zmq.Context[zmq.Socket[bytes]],
        publish_endpoint: str,
        subscribe_endpoint: str,
        *,
        hwm: int,
        max_message_bytes: int,
        linger_ms: int,
        ipv6: bool = False,
        curve: ServerCurve | None = None,
        on_peer: PeerCallback | None = None,
        own_member_first: bool = False,
    ) -> None:
        self.publish_endpoint = publish_endpoint
        self.subscribe_endpoint = subscribe_endpoint
        self.zap: ZapHandler | None = None
        self.peers: PeerMonitor | None = None
        control_name = f"inproc://nanomitter-proxy-{next(_ids)}"
        self._xsub = context.socket(zmq.XSUB)
        self._xpub = context.socket(zmq.XPUB)
        self._control = context.socket(zmq.PAIR)
        self._control_remote = context.socket(zmq.PAIR)
        sockets = (self._xsub, self._xpub, self._control, self._control_remote)
        try:
            if curve is not None:
                self.zap = ZapHandler(context, curve.allowed)
            for sock in (self._xsub, self._xpub):
                sock.linger = linger_ms
                sock.ipv6 = ipv6
                if curve is not None:
                    sock.curve_server = True
                    sock.curve_secretkey = curve.secret
                    sock.zap_domain = ZAP_DOMAIN
            self._xsub.rcvhwm = hwm
            self._xsub.maxmsgsize = max_message_bytes
            self._xpub.sndhwm = hwm
            self._control.linger = 0
            self._control.rcvtimeo = 2000
            self._control_remote.linger = 0
            if on_peer is not None:  # before binding (no peer missed) and before the thread
                monitor = self._xpub.get_monitor_socket(_PEER_EVENTS)
                self.peers = PeerMonitor(monitor, on_peer, own_member_first=own_member_first)
            for sock, endpoint in (
                (self._xsub, publish_endpoint),
                (self._xpub, subscribe_endpoint),
            ):
                try:
                    sock.bind(endpoint)
                except zmq.ZMQError as exc:
                    raise ProxyBindError(endpoint, exc) from exc
            self._xsub.send(b"\x01")  # subscribe to everything: XPUB filters, see the docstring
            self._control.bind(control_name)
            self._control_remote.connect(control_name)
        except BaseException:
            for sock in sockets:
                sock.close(0)
            if self.zap is not None:
                self.zap.close()
            if self.peers is not None:
                self.peers.close()
            raise
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._run, name=f"nanomitter-zmq-proxy {publish_endpoint}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        try:
            zmq.proxy_steerable(self._xsub, self._xpub, None, self._control_remote)
        except zmq.ZMQError as exc:
            logger.warning("the ZeroMQ proxy stopped: %s", exc)
        finally:
            self._xsub.close()  # with linger: what was forwarded still leaves
            self._xpub.close()
            self._control_remote.close(0)

    def statistics(self) -> Mapping[str, int]:
        """libzmq's counters (frames and bytes each way); empty if the proxy does not answer."""
        with self._lock:
            if not self._thread.is_alive():
                return {}
            try:
                self._control.send(b"STATISTICS")
                frames = self._control.recv_multipart()
            except zmq.ZMQError:
                return {}
        if len(frames) != len(_STAT_NAMES):
            return {}
        return {
            name: struct.unpack("=Q", frame)[0]
            for name, frame in zip(_STAT_NAMES, frames, strict=True)
        }

    def close(self) -> None:
        """Stop forwarding and wait for the thread to close the proxy's sockets."""
        with self._lock:
            if self._thread.is_alive():
                with contextlib.suppress(zmq.ZMQError):
                    self._control.send(b"TERMINATE")
                self._thread.join(timeout=5)
            self._control.close(0)
        if self.zap is not None:
            self.zap.close()
        if self.peers is not None:
            self.peers.close()
