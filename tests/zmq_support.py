"""Helpers for the ZeroMQ tests: bus URLs on free port pairs, a hub in its own process."""

from __future__ import annotations

import atexit
import itertools
import shutil
import socket
import tempfile

from nanomitter import DistributedEventEmitter
from nanomitter.transports.zmq import ZmqTransport

SOCKET_DIR = tempfile.mkdtemp(prefix="nanomitter-zmq-")  # short: unix socket paths are short
atexit.register(shutil.rmtree, SOCKET_DIR, ignore_errors=True)
_ids = itertools.count()


def zmq_of(bus: DistributedEventEmitter) -> ZmqTransport:
    assert isinstance(bus.transport, ZmqTransport)
    return bus.transport


def free_port_pair() -> int:
    """A port P such that P and P+1 are free on 127.0.0.1 (a zmq+tcp bus uses both).

    Never 55555, the default bus's port, as P or P+1."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as first:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            if port >= 65535 or port in (55554, 55555):  # never the default bus's port
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free pair of consecutive ports on 127.0.0.1")


def tcp_url(query: str = "") -> str:
    return f"zmq+tcp://127.0.0.1:{free_port_pair()}{query}"


def ipc_url(query: str = "") -> str:
    return f"zmq+ipc://{SOCKET_DIR}/{next(_ids)}{query}"


def make_url(scheme: str, query: str = "") -> str:
    return tcp_url(query) if scheme == "tcp" else ipc_url(query)
