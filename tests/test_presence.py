"""Presence: peers() and on_peer() from the ``<3`` heartbeats, bye on close, timeouts.

The conformance check ``presence`` runs the join/leave story on every transport; here are
the table's rules, hooks that raise, and a SIGKILLed process declared gone by its timeout.
"""

from __future__ import annotations

import os
import sys
import time
import uuid

import pytest

import nanomitter
from nanomitter import ListenerError, Problem
from nanomitter.core.presence import ORIGINAL_INTERVAL, Peer, PeerTable
from peers import Recorder, free_port, running

pytestmark = pytest.mark.anyio


def table(problems: list[Problem] | None = None) -> tuple[PeerTable, list[str]]:
    seen: list[str] = []
    errors: list[int] = []
    peers = PeerTable((problems if problems is not None else []).append, lambda: errors.append(1))
    peers.add_hook("joined", lambda peer: seen.append(f"+{peer.id}"))
    peers.add_hook("left", lambda peer: seen.append(f"-{peer.id}"))
    return peers, seen


def test_heartbeats_join_refresh_and_bye() -> None:
    peers, seen = table()
    peers.heartbeat("a", {"service": "svc", "interval": 1.0, "host": "h", "pid": 7}, now=100.0)
    peers.heartbeat("a", {"service": "svc", "interval": 1.0}, now=101.0)
    [peer] = peers.peers()
    assert (peer.service, peer.first_seen, peer.last_seen, peer.interval) == ("svc", 100, 101, 1)
    assert peer.expires == 104.0  # three missed intervals
    peers.heartbeat("a", {"service": "svc", "bye": True}, now=101.5)
    assert peers.peers() == []
    assert seen == ["+a", "-a"]


def test_silent_peers_expire_after_three_of_their_intervals() -> None:
    peers, seen = table()
    peers.heartbeat("fast", {"service": "f", "interval": 1.0}, now=0.0)
    peers.heartbeat("original", {"service": "o"}, now=0.0)  # the TS package: no interval
    assert peers.expire(now=2.9) == 3.0
    assert peers.expire(now=3.0) == 3 * ORIGINAL_INTERVAL
    assert seen == ["+fast", "+original", "-fast"]
    assert [p.id for p in peers.peers()] == ["original"]


def test_odd_heartbeat_data_is_tolerated() -> None:
    peers, _ = table()
    for data in (None, "x", {"service": 5, "interval": "soon", "pid": True}, {"interval": -1}):
        peers.heartbeat("odd", data, now=0.0)
    [peer] = peers.peers()
    assert (peer.service, peer.pid, peer.interval) == ("", 0, ORIGINAL_INTERVAL)
    peers.heartbeat("ghost", {"bye": True}, now=0.0)  # never joined: nothing to report


def test_a_raising_hook_is_reported_and_the_others_still_run() -> None:
    problems: list[Problem] = []
    peers, seen = table(problems)

    def broken(peer: Peer) -> None:
        raise RuntimeError("hook bug")

    peers.add_hook("joined", broken)
    peers.add_hook("joined", lambda peer: seen.append("after"))
    peers.heartbeat("a", {"service": "s"}, now=0.0)
    assert seen == ["+a", "after"]
    assert isinstance(problems[0], ListenerError)
    with pytest.raises(ValueError, match="'joined' or 'left'"):
        peers.add_hook("arrived", print)  # type: ignore[arg-type]


async def test_peers_on_memory_with_a_decorator_and_bye(anyio_backend: str) -> None:
    url = f"memory://presence-{uuid.uuid4().hex}"
    async with nanomitter.connect(url) as watcher:
        joined, left = Recorder(), Recorder()

        @watcher.on_peer("joined")
        def on_joined(peer: Peer) -> None:
            joined(peer)

        watcher.on_peer("left", left)
        async with nanomitter.connect(url, service="pricer", heartbeat_interval=0.1) as pricer:
            [peer] = await joined.wait(1)
            assert (peer.id, peer.service, peer.pid) == (pricer.id, "pricer", os.getpid())
            assert [p.id for p in watcher.peers()] == [pricer.id]
        [gone] = await left.wait(1)  # the bye: no waiting for the timeout
        assert gone.id == pricer.id
        assert watcher.peers() == []
        assert watcher.off_peer("left", left)


CHILD = """
import sys, anyio, nanomitter
async def main():
    async with nanomitter.connect(sys.argv[1], service="doomed", heartbeat_interval=0.2) as bus:
        print("ready", bus.id, flush=True)
        await anyio.sleep_forever()
anyio.run(main)
"""


async def test_a_killed_process_is_declared_gone_after_its_timeout(anyio_backend: str) -> None:
    url = f"tcp://127.0.0.1:{free_port()}"
    async with nanomitter.connect(url) as watcher:
        joined, left = Recorder(), Recorder()
        watcher.on_peer("joined", joined)
        watcher.on_peer("left", left)
        async with running([sys.executable, "-c", CHILD, url]) as (process, output):
            line = await output.wait_for(lambda text: text.startswith("ready"))
            child_id = line.split()[1]
            await joined.wait_until(lambda: any(p.id == child_id for p in joined.events))
            process.kill()  # SIGKILL: no bye
            killed = time.monotonic()
            await left.wait(1)
            waited = time.monotonic() - killed
        [gone] = left.events
        assert gone.id == child_id
        assert gone.service == "doomed"
        assert waited < 5  # three 0.2 s intervals after its last heartbeat, plus scheduling
        assert all(p.id != child_id for p in watcher.peers())
