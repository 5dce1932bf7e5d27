"""The parts of nng that pynng keeps private: the hub's raw socket, and copy-free I/O.

The hub: a raw bus0 socket remembers which pipe each message came from and, when it sends,
skips that pipe; ``nng_device`` with one socket reflects everything it receives back into
it. Together they re-broadcast every message to every peer except its origin, without
Python touching a single message.

The hot path: :func:`send_nowait` and :class:`Receiver` call ``nng_send``/``nng_recvmsg``
through pynng's cffi ``lib`` directly, decoding straight from the message body (pynng's
``recv`` copies every message into new bytes and cannot unpack an empty one).

pynng keeps all of this private: ``pynng.Bus0`` accepts an ``opener`` and the cffi ``lib``
exposes the C functions. This module is the only place that relies on them;
``tests/test_nng.py::test_pynng_still_exposes_the_raw_socket_api`` fails loudly if a pynng
upgrade takes them away.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import pynng
from pynng import _nng  # pynng's cffi module (private)

T = TypeVar("T")
_lib: Any = _nng.lib
_ffi: Any = _nng.ffi


_NEEDED = (
    "nng_bus0_open_raw",
    "nng_device",
    "nng_send",
    "nng_recvmsg",
    "nng_msg_body",
    "nng_msg_len",
    "nng_msg_free",
)
PeerCallback = Callable[[bool, str], None]
"""``(joined, address)``: a peer connected to (True) or left (False) the hub. Called from
nng's own threads, so it must be quick and must not block (hand the news to a queue)."""
_NONBLOCK: int = _lib.NNG_FLAG_NONBLOCK
EAGAIN: int = _lib.NNG_EAGAIN
ECLOSED: int = _lib.NNG_ECLOSED


_STATS = (
    "nng_stats_get",
    "nng_stats_free",
    "nng_stat_find_dialer",
    "nng_stat_child",
    "nng_stat_next",
    "nng_stat_name",
    "nng_stat_type",
    "nng_stat_value",
    "NNG_STAT_COUNTER",
)
"""nng's statistics API: optional (without it, :func:`dialer_errors` knows nothing)."""


def raw_api_available() -> bool:
    """True if this pynng still exposes what this module needs."""
    return all(hasattr(_lib, name) for name in _NEEDED)


def dialer_errors(dialer: pynng.Dialer) -> dict[str, int]:
    """The failure counters nng keeps per dialer (``auth``: a TLS failure, ``refused``,
    ``other`` ...): the only place a non-blocking dial's errors show. ``{}`` if this pynng
    or nng has no statistics. One snapshot costs ~0.3 ms; read it only while joining fails.
    """
    if not all(hasattr(_lib, name) for name in _STATS):
        return {}
    counters: dict[str, int] = {}
    snapshot = _ffi.new("nng_stat **")
    if _lib.nng_stats_get(snapshot) != 0:
        return counters
    try:
        node = _lib.nng_stat_find_dialer(snapshot[0], dialer.dialer)
        child = _lib.nng_stat_child(node) if node != _ffi.NULL else _ffi.NULL
        while child != _ffi.NULL:
            if _lib.nng_stat_type(child) == _lib.NNG_STAT_COUNTER:
                name = _ffi.string(_lib.nng_stat_name(child)).decode()
                counters[name] = int(_lib.nng_stat_value(child))
            child = _lib.nng_stat_next(child)
    finally:
        _lib.nng_stats_free(snapshot[0])
    return counters


def send_nowait(socket: pynng.Socket, frame: bytes) -> int:
    """``nng_send`` without blocking: 0 when sent, else the nng error (EAGAIN: full)."""
    result: int = _lib.nng_send(socket.socket, frame, len(frame), _NONBLOCK)
    return result


def raise_for(error: int) -> None:
    """Raise pynng's exception for an nng error code."""
    pynng.exceptions.check_err(error)


class Receiver:
    """Takes messages off one socket without blocking and hands their bodies to a callback."""

    def __init__(self, socket: pynng.Socket) -> None:
        self._socket = socket
        self._message = _ffi.new("nng_msg **")

    def receive(self, deliver: Callable[[Any, list[T]], None], out: list[T]) -> int:
        """Call ``deliver(body, out)`` with the next message body (a buffer valid only during
        the call). Returns 0, or the nng error (EAGAIN: nothing ready; ECLOSED: closed).
        """
        error: int = _lib.nng_recvmsg(self._socket.socket, self._message, _NONBLOCK)
        if error:
            return error
        message = self._message[0]
        try:
            deliver(_ffi.buffer(_lib.nng_msg_body(message), _lib.nng_msg_len(message)), out)
        finally:
            _lib.nng_msg_free(message)
        return 0


class Reflector:
    """Listens on ``addresses`` and re-broadcasts each message to every other peer."""

    def __init__(
        self,
        addresses: list[str],
        *,
        recv_max_size: int,
        buffer_size: int,
        tls_config: pynng.TLSConfig | None = None,
        tls_addresses: frozenset[str] = frozenset(),
        on_peer: PeerCallback | None = None,
        unreported: frozenset[str] = frozenset(),
    ) -> None:
        """``on_peer`` hears of every peer that connects or leaves, except those that came
        in through one of the ``unreported`` addresses (the hub process's own member)."""
        if not raw_api_available():
            raise RuntimeError(
                "this pynng does not expose nng_bus0_open_raw/nng_device; the nng hub needs "
                "them (pin pynng to a version that has them)"
            )
        self.socket = pynng.Bus0(opener=_lib.nng_bus0_open_raw)
        try:
            self.socket.recv_max_size = recv_max_size
            self.socket.recv_buffer_size = buffer_size
            self.socket.send_buffer_size = buffer_size
            if tls_config is not None and tls_addresses:
                self.socket.tls_config = tls_config
            if on_peer is not None:  # before listening: no peer goes unreported
                _watch_pipes(self.socket, on_peer, unreported)
            for address in addresses:
                self.socket.listen(address)
        except BaseException:
            self.socket.close()
            raise
        self.addresses = addresses
        self._thread = threading.Thread(
            target=self._run, name=f"nanomitter-hub {addresses[0]}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        no_socket = _ffi.new("nng_socket *")[0]  # NNG_SOCKET_INITIALIZER: reflector mode
        _lib.nng_device(self.socket.socket, no_socket)  # returns when the socket closes

    @property
    def peer_count(self) -> int:
        return len(self.socket.pipes)

    def close(self) -> None:
        """Stop reflecting and release the port; waits for the device thread to end."""
        self.socket.close()
        self._thread.join(timeout=5)


def _watch_pipes(socket: pynng.Socket, on_peer: PeerCallback, unreported: frozenset[str]) -> None:
    """Turn pynng's pipe callbacks into ``on_peer(joined, address)`` calls.

    The address is read when the pipe arrives: once it is removed, nng may already have
    closed it. pynng runs these callbacks one at a time, under its pipe lock.
    """
    addresses: dict[int, str | None] = {}  # id(pipe) -> its peer's address; None: unreported

    def joined(pipe: pynng.Pipe) -> None:
        address = None if _pipe_text(pipe, "url") in unreported else _pipe_text(pipe, "remote")
        addresses[id(pipe)] = address
        if address is not None:
            on_peer(True, address)

    def left(pipe: pynng.Pipe) -> None:
        address = addresses.pop(id(pipe), "")
        if address is not None:
            on_peer(False, address)

    socket.add_post_pipe_connect_cb(joined)
    socket.add_post_pipe_remove_cb(left)


def _pipe_text(pipe: pynng.Pipe, what: str) -> str:
    """The pipe's listener URL (``url``) or its peer's address (``remote``); '' if unknown."""
    try:
        return str(pipe.url if what == "url" else pipe.remote_address)
    except (pynng.NNGException, ValueError, TypeError):
        return ""
