"""Why a ZeroMQ node could not join: libzmq's socket monitor, read while ``open()`` waits.

libzmq reports a refused handshake only on a monitor socket; without it a node that lacks the
hub's CURVE keys waits ``connect_timeout`` and hears "no hub answered". A PROTOCOL failure
(a CURVE node and a plain hub, or the other way round) and an AUTH failure (the hub's
``curve_allow`` refused this node's key) are final: libzmq never redials, so the monitor
must be attached before ``connect()``. A hang-up in the middle of the handshake (NO_DETAIL: a
wrong ``curve_server_key``, something that is not ZeroMQ, or a no-keys node racing the hub's
greeting) is retried by libzmq, so it is only counted and named if the wait times out.
"""

from __future__ import annotations

import errno
from contextlib import suppress

import zmq
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message

HANDSHAKE_EVENTS = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)


class HandshakeWatch:
    """The monitor of a node's SUB socket while it joins (its PUB meets the same hub with
    the same keys, so one is enough). ``check()`` never blocks; ``close()`` before the
    context is terminated (an open monitor socket would keep ``term()`` waiting)."""

    def __init__(self, sock: zmq.Socket[bytes], address: str, public_key: bytes | None) -> None:
        self._sock = sock
        self._monitor: zmq.Socket[bytes] | None = sock.get_monitor_socket(HANDSHAKE_EVENTS)
        self._address = address
        self._public_key = public_key  # Z85; None: this node has no CURVE keys
        self.succeeded = False
        self.hung_up = 0
        self.last_errno = 0

    def check(self) -> str | None:
        """Read what the monitor has; the reason if the hub refused this node for good."""
        monitor = self._monitor
        while monitor is not None:
            try:
                event = recv_monitor_message(monitor, zmq.NOBLOCK)
            except zmq.Again:
                return None
            refusal = self._refusal(int(event["event"]), int(event["value"]))
            if refusal is not None:
                return refusal
        return None

    def hint(self) -> str:
        """For the timeout message: the hang-ups the monitor saw, if any."""
        self.check()
        if self.succeeded or not self.hung_up:
            return ""
        why = errno.errorcode.get(self.last_errno, str(self.last_errno))
        told = f"; it hung up in each of {self.hung_up} handshakes ({why})"
        if self._public_key is not None:
            return told + ": check the CURVE keys (is curve_server_key this hub's public key?)"
        return told + (
            ": a hub that requires CURVE keys (curve_server_key) does that to a node without "
            "them, and so does a server that is not ZeroMQ"
        )

    def close(self) -> None:
        monitor, self._monitor = self._monitor, None
        if monitor is None:
            return
        with suppress(zmq.ZMQError):
            self._sock.disable_monitor()
        monitor.close(0)

    def _refusal(self, kind: int, value: int) -> str | None:
        hub = f"the hub at {self._address}"
        if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self.succeeded = True
        elif kind == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
            self.hung_up += 1
            self.last_errno = value
        elif kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:  # value: the ZAP status code
            own = f" ({z85.decode(self._public_key).hex()})" if self._public_key else ""
            return (
                f"{hub} refused this node's CURVE keys (ZAP status {value}): add its public key"
                f"{own} to the hub's curve_allow, or give the node the keys of a member on that "
                "list (curve_secret_key or curve_keyfile)"
            )
        elif kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
            if value != zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
                return f"the handshake with {hub} failed (ZMTP protocol error {value:#x})" + (
                    ": check the CURVE keys (curve_server_key)" if self._public_key else ""
                )
            if self._public_key is None:
                return (
                    f"{hub} requires CURVE: pass its public key as curve_server_key, and this "
                    "node's own CURVE keys (curve_secret_key or curve_keyfile) if the hub's "
                    "curve_allow lists members"
                )
            return (
                f"{hub} does not use CURVE: drop the curve_* options, or run the hub with "
                "curve_server_secret and curve_allow"
            )
        return None
