"""The conformance suite on the nng transport: tcp, ipc, inproc and ws, asyncio and trio.

Each check gets a fresh address; the first emitter binds it and becomes the hub (role=auto).
Rule 8 runs against a hub in its own process, killed with SIGKILL and started again on the
same address; across_processes runs peers in child processes.
"""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

from nanomitter import conformance
from peers import free_port

HUB_SCRIPT = Path(__file__).with_name("nng_hub.py")
SCHEMES = ["tcp", "ipc", "inproc", "ws"]
_ids = itertools.count()
_socket_dir = tempfile.mkdtemp(prefix="nanomitter-ipc-")  # short: unix socket paths are short


def nng_urls(scheme: str, query: str = "") -> Callable[[], str]:
    def make_url() -> str:
        address = {
            "tcp": lambda: f"tcp://127.0.0.1:{free_port()}",
            "ipc": lambda: f"ipc://{_socket_dir}/{next(_ids)}.sock",
            "inproc": lambda: f"inproc://conformance-{next(_ids)}",
            "ws": lambda: f"ws://127.0.0.1:{free_port()}/bus",
        }[scheme]()
        return address + query

    return make_url


class HubProcess:
    """A hub in its own process that a test can kill and start again on the same address."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(HUB_SCRIPT), self.url], stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if line.strip() != "ready":
            raise AssertionError(f"the hub did not start (said {line!r})")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    async def restart(self, url: str) -> None:
        await anyio.to_thread.run_sync(self.kill)
        await anyio.to_thread.run_sync(self.start)


@pytest.fixture
def hub_process() -> Iterator[HubProcess]:
    hub = HubProcess(f"tcp://127.0.0.1:{free_port()}")
    hub.start()
    try:
        yield hub
    finally:
        hub.kill()


CHECKS_HERE = [c for c in conformance.CHECKS if c.name != "reconnects"]


@pytest.mark.anyio
@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("check", CHECKS_HERE, ids=[c.name for c in CHECKS_HERE])
async def test_nng_conforms(check: conformance.Check, scheme: str, anyio_backend: str) -> None:
    if scheme == "inproc" and check.name == "across_processes":
        pytest.skip("inproc:// is one process by definition")
    await conformance.run_check(check, nng_urls(scheme))


@pytest.mark.anyio
async def test_nng_reconnects_after_the_hub_restarts(
    hub_process: HubProcess, anyio_backend: str
) -> None:
    def make_url() -> str:
        return hub_process.url + "?role=node"

    await conformance.run_check(
        conformance.get_check("reconnects"), make_url, restart_hub=hub_process.restart
    )
