"""The suite against a correct transport that crosses processes (the positive control).

memory:// cannot cross processes, so this is where ``check_across_processes`` and the
peer machinery get a transport that really works: :class:`conformance_toys.TcpHubToy`,
whose hub runs in its own process for the whole module.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import conformance_toys
from nanomitter import conformance

TOYS_SCRIPT = Path(conformance_toys.__file__)


@pytest.fixture(scope="module")
def hub_port() -> Iterator[int]:
    """Start the toy hub process; stop and reap it after the module."""
    hub = subprocess.Popen(
        [sys.executable, str(TOYS_SCRIPT), "hub"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert hub.stdout is not None
        line = hub.stdout.readline()
        if not line.strip().isdigit():
            pytest.fail(f"the toy hub did not start (said {line!r}, exit {hub.poll()})")
        yield int(line)
    finally:
        hub.kill()
        hub.wait(timeout=10)


@pytest.mark.anyio
@conformance.parametrize()
async def test_tcp_toy_conforms(
    check: conformance.Check, hub_port: int, anyio_backend: str
) -> None:
    def make_url() -> str:
        return f"tcptoy://127.0.0.1:{hub_port}/bus-{uuid.uuid4().hex}"

    await conformance.run_check(check, make_url)
