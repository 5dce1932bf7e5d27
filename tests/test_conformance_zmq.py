"""The conformance suite on the ZeroMQ transport: zmq+tcp on asyncio and trio, zmq+ipc on one.

Each check gets a fresh address; the first emitter binds it and runs the proxy (role=auto).
Rule 8 runs against a hub in its own process, killed with SIGKILL and started again on the
same address; across_processes runs peers in child processes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from nanomitter import conformance
from peers import HubProcess, variants_on_backends
from zmq_support import make_url

SCHEMES = ["tcp", "ipc"]
CHECKS_HERE = [c for c in conformance.CHECKS if c.name != "reconnects"]


def zmq_urls(scheme: str) -> Callable[[], str]:
    return lambda: make_url(scheme)


@pytest.mark.anyio
@pytest.mark.parametrize(("scheme", "anyio_backend"), variants_on_backends("tcp", SCHEMES[1:]))
@pytest.mark.parametrize("check", CHECKS_HERE, ids=[c.name for c in CHECKS_HERE])
async def test_zmq_conforms(check: conformance.Check, scheme: str, anyio_backend: str) -> None:
    await conformance.run_check(check, zmq_urls(scheme))


@pytest.fixture(params=SCHEMES)
def hub_process(request: pytest.FixtureRequest) -> Iterator[HubProcess]:
    hub = HubProcess(make_url(str(request.param)))
    hub.start()
    try:
        yield hub
    finally:
        hub.kill()


@pytest.mark.anyio
async def test_zmq_reconnects_after_the_hub_restarts(
    hub_process: HubProcess, anyio_backend: str
) -> None:
    def make_url() -> str:
        return hub_process.url + "?role=node"

    await conformance.run_check(
        conformance.get_check("reconnects"), make_url, restart_hub=hub_process.restart
    )
