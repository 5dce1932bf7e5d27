"""The nng hub: a raw bus0 socket reflected by ``nng_device`` in a thread.

A raw bus0 socket remembers which pipe each message came from and, when it sends, skips that
pipe; ``nng_device`` with one socket reflects everything it receives back into it. Together
they re-broadcast every message to every peer except its origin, without Python touching
a single message.

pynng keeps raw sockets private: ``pynng.Bus0`` accepts an ``opener`` and the cffi ``lib``
exposes ``nng_bus0_open_raw`` and ``nng_device``. This module is the only place that relies
on them; ``tests/test_nng_reflector.py`` fails loudly if a pynng upgrade takes them away.
"""

from __future__ import annotations

import threading
from typing import Any

import pynng
from pynng import _nng  # pynng's cffi module (private)

_lib: Any = _nng.lib
_ffi: Any = _nng.ffi


def raw_api_available() -> bool:
    """True if this pynng still exposes what the reflector needs."""
    return all(hasattr(_lib, name) for name in ("nng_bus0_open_raw", "nng_device"))


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
    ) -> None:
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
