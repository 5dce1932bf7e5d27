"""The conformance suite on the nng transport: tcp on asyncio and trio; ipc, inproc, ws on one.

Each check gets a fresh address; the first emitter binds it and becomes the hub (role=auto).
Rule 8 runs against a hub in its own process, killed with SIGKILL and started again on the
same address; across_processes runs peers in child processes.
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Callable, Iterator

import pytest

from nanomitter import conformance
from peers import HubProcess, free_port, variants_on_backends

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
@pytest.mark.parametrize(("scheme", "anyio_backend"), variants_on_backends("tcp", SCHEMES[1:]))
@pytest.mark.parametrize("check", CHECKS_HERE, ids=[c.name for c in CHECKS_HERE])
async def test_nng_conforms(check: conformance.Check, scheme: str, anyio_backend: str) -> None:
    if scheme == "inproc" and check.name in ("across_processes", "requests_across_processes"):
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
