"""The conformance suite on NATS: one real nats-server, and a three-server cluster.

Each check gets its own subject namespace (``?prefix=``) on a server shared by the module, so
checks never see each other's traffic. On the cluster, nats-py picks a random server per
emitter, so events cross routes. Rule 8 restarts the server (SIGKILL, then the same port);
across_processes runs peers in child processes. nats-py is asyncio-only: these run on asyncio
(test_nats.py checks the clear error on trio).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio.to_thread
import pytest

from nanomitter import conformance
from nats_support import NatsCluster, NatsServer

CHECKS_HERE = [c for c in conformance.CHECKS if c.name != "reconnects"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("nats-conformance"))
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    cluster = NatsCluster(tmp_path_factory.mktemp("nats-cluster-conformance"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.close()


def namespaced(base: str) -> Callable[[], str]:
    """A fresh bus on the same servers: a subject prefix no other check uses."""
    return lambda: f"{base}?prefix=conf{uuid.uuid4().hex[:12]}"


@pytest.mark.anyio
@pytest.mark.parametrize("check", CHECKS_HERE, ids=[c.name for c in CHECKS_HERE])
async def test_nats_server_conforms(
    check: conformance.Check, shared_server: NatsServer, anyio_backend: str
) -> None:
    await conformance.run_check(check, namespaced(shared_server.url))


@pytest.mark.anyio
@pytest.mark.parametrize("check", CHECKS_HERE, ids=[c.name for c in CHECKS_HERE])
async def test_nats_cluster_conforms(
    check: conformance.Check, shared_cluster: NatsCluster, anyio_backend: str
) -> None:
    await conformance.run_check(check, namespaced(shared_cluster.url))


@pytest.mark.anyio
async def test_nats_reconnects_after_the_server_restarts(
    tmp_path: Path, anyio_backend: str
) -> None:
    server = NatsServer(tmp_path)
    server.start()
    try:

        async def restart(url: str) -> None:
            await anyio.to_thread.run_sync(server.restart)

        await conformance.run_check(
            conformance.get_check("reconnects"), namespaced(server.url), restart_hub=restart
        )
    finally:
        server.kill()
