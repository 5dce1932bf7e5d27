"""Presence: members that announce themselves are listed, and heard joining and leaving."""

from __future__ import annotations

from typing import Any

from ..harness import (
    Cluster,
    MakeURL,
    fresh_url,
)


async def check_presence(make_url: MakeURL) -> None:
    """Presence: ``peers()`` lists the members that announce themselves, ``on_peer`` hooks
    hear them join and leave, and a member that closes leaves at once (its ``<3`` bye).

    B and C have service names and heartbeat every 0.2 s; A has neither. A must list both
    with their services, hear each join once, then hear C leave when C closes, B staying.
    """
    url, _ = fresh_url(make_url)
    cluster = Cluster(url)
    a = cluster.node("A")
    b = cluster.node("B", service="svc-b", heartbeat_interval=0.2)
    c = cluster.node("C", service="svc-c", heartbeat_interval=0.2)
    joined: list[str] = []
    left: list[str] = []

    def on_joined(peer: Any) -> None:
        joined.append(peer.id)
        cluster.signal.pulse()

    def on_left(peer: Any) -> None:
        left.append(peer.id)
        cluster.signal.pulse()

    a.bus.on_peer("joined", on_joined)
    a.bus.on_peer("left", on_left)
    async with cluster:
        ids = {b.bus.id: "svc-b", c.bus.id: "svc-c"}

        def listed() -> dict[str, str]:
            return {peer.id: peer.service for peer in a.bus.peers()}

        await cluster.signal.expect(
            lambda: listed() == ids,
            lambda: (
                f"node A's peers() is {listed()}; B and C (service names, heartbeats "
                f"every 0.2 s) must be listed as {ids}"
            ),
        )
        if sorted(joined) != sorted(ids):
            raise AssertionError(f"on_peer('joined') saw {joined}; B and C once each")
        await c.close()
        await cluster.signal.expect(
            lambda: left == [c.bus.id],
            lambda: (
                f"node A's on_peer('left') saw {left} after C closed; C's bye must make it "
                "leave (and only C)"
            ),
        )
        if listed() != {b.bus.id: "svc-b"}:
            raise AssertionError(f"after C left, node A's peers() is {listed()}; B must stay")
