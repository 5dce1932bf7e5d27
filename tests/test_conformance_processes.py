"""The processes helper: peers in child processes start, obey, report, and are always reaped.

memory:// cannot cross processes, so each peer here has a bus of its own inside its child
(it emits to itself with echo); that is enough to test the helper's mechanics.
"""

from __future__ import annotations

import uuid

import anyio
import anyio.abc
import pytest

import conformance_toys
from nanomitter import conformance
from nanomitter.conformance.processes import PeerError, spawn_peer


def memory_url() -> str:
    return f"memory://peer-{uuid.uuid4().hex}"


@pytest.mark.anyio
async def test_peer_emits_to_itself_and_reports(anyio_backend: str) -> None:
    async with spawn_peer(memory_url(), name="P1") as peer:
        assert peer.id and peer.pid
        await peer.listen("t.>")
        await peer.emit("t.x", 100)
        assert await peer.wait("t.>", 100, within=20, include_own=True) == 100
        assert await peer.ping() == {peer.id}  # with echo it hears its own probe
        report = await peer.report()
        assert report["id"] == peer.id
        assert report["listeners"]["t.>"] == {
            "received": 100,
            "own": 100,
            "duplicates": 0,
            "out_of_order": 0,
            "corrupted": 0,  # its own events' data arrived as emitted
            "first_corrupted": "",
            "senders": {peer.id: 100},
        }
        assert report["stats"]["emitted"] == 101  # 100 events and the probe
        process = peer.process
    assert process.returncode == 0  # closed politely


@pytest.mark.anyio
async def test_peer_without_echo_does_not_hear_itself(anyio_backend: str) -> None:
    async with spawn_peer(memory_url(), echo=False) as peer:
        await peer.listen("t.>")
        await peer.emit("t.x", 5)
        report = await peer.report()  # own listeners would have run inside emit
        assert report["listeners"]["t.>"]["received"] == 0
        assert report["stats"]["emitted"] == 5


@pytest.mark.anyio
async def test_peer_is_killed_when_the_block_fails(anyio_backend: str) -> None:
    processes: list[anyio.abc.Process] = []

    async def failing_body() -> None:
        async with spawn_peer(memory_url()) as peer:
            processes.append(peer.process)
            raise RuntimeError("test body failed")

    with pytest.raises(RuntimeError, match="test body failed"):
        await failing_body()
    assert processes[0].returncode is not None


@pytest.mark.anyio
async def test_peer_is_killed_when_the_block_is_cancelled(anyio_backend: str) -> None:
    with anyio.CancelScope() as scope:
        async with spawn_peer(memory_url()) as peer:
            process = peer.process
            scope.cancel()
            await anyio.sleep_forever()
    assert process.returncode is not None


@pytest.mark.anyio
async def test_peer_failures_are_peer_errors_with_stderr(anyio_backend: str) -> None:
    with pytest.raises(PeerError, match=r"could not join nosuch://x.*unknown bus URL scheme"):
        async with spawn_peer("nosuch://x"):
            pass
    async with spawn_peer(memory_url()) as peer:
        with pytest.raises(PeerError, match="unknown command 'bogus'"):
            await peer.request("bogus")
        await peer.report()  # still usable after a refused command
        peer.process.kill()
        with pytest.raises(PeerError, match=r"exited before answering|stopped reading"):
            await peer.report()
        with pytest.raises(PeerError, match="no longer usable"):
            await peer.report()


@pytest.mark.anyio
async def test_peer_gets_runtime_registered_transports(anyio_backend: str) -> None:
    """A scheme registered in this process (a toy here) works in the peer too."""
    assert "dupmem" in conformance_toys.TOYS
    async with spawn_peer(f"dupmem://peer-{uuid.uuid4().hex}") as peer:
        await peer.listen("t")
        await peer.emit("t", 3)
        assert await peer.wait("t", 3, within=20, include_own=True) == 3


@pytest.mark.anyio
async def test_cross_process_check_catches_a_transport_that_only_claims_to_cross(
    anyio_backend: str,
) -> None:
    url = f"liarmem://liar-{uuid.uuid4().hex}"
    with (
        conformance.deadline(1.5),
        pytest.raises(AssertionError, match="could not all hear each other"),
    ):
        await conformance.check_across_processes(lambda: url)
