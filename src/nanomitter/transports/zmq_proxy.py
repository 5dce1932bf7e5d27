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
import struct
import threading
from collections.abc import Mapping
from dataclasses import dataclass

import zmq
from zmq.utils import z85

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


class ProxyBindError(Exception):
    """The proxy could not bind one of its endpoints (``errno`` says why)."""

    def __init__(self, endpoint: str, cause: zmq.ZMQError) -> None:
        self.endpoint = endpoint
        self.errno = cause.errno
        super().__init__(f"cannot bind {endpoint}: {cause}")


class Proxy:
    """Binds XSUB at ``publish_endpoint`` and XPUB at ``subscribe_endpoint``; forwards in a
    thread until :meth:`close`. Raises :class:`ProxyBindError` if it cannot bind."""

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
    ) -> None:
        self.publish_endpoint = publish_endpoint
        self.subscribe_endpoint = subscribe_endpoint
        self.zap: ZapHandler | None = None
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
