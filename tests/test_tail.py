"""Loss at the tail is counted: heartbeats and byes carry each topic's last number.

A receiver counts a gap when a later event arrives; the events after the last one it gets
are counted when the sender's next heartbeat (or its bye, when it closes) says how far it
went (``nanomitter.core.tail``).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

import nanomitter
from nanomitter import DistributedEvent, DistributedEventEmitter
from nanomitter.core.codecs import MsgpackCodec
from nanomitter.core.tail import MAX_BEACON_TOPICS, TailBeacon, revealed_tail
from nanomitter.transports.memory import MemoryTransport
from nats_support import NatsServer, nats_server
from peers import Recorder

pytestmark = pytest.mark.anyio
__all__ = ["nats_server"]  # a fixture: imported so that pytest finds it


class TailDroppingMemory(MemoryTransport):
    """memory:// that loses every event on ``t`` numbered above ``keep`` (a lost tail)."""

    def __init__(self, name: str, keep: int) -> None:
        super().__init__(name)
        self.keep = keep

    async def send(self, event: DistributedEvent) -> None:
        if event.topic == "t" and event.seq > self.keep:
            return
        await super().send(event)


def heartbeat_frame(sender: str, seq: int, data: Any) -> bytes:
    return MsgpackCodec().encode(DistributedEvent(topic="<3", data=data, sender=sender, seq=seq))


def event_frame(sender: str, topic: str, seq: int) -> bytes:
    return MsgpackCodec().encode(DistributedEvent(topic=topic, data=seq, sender=sender, seq=seq))


# ---------------------------------------------------------------------------- the pieces


def test_the_beacon_tells_each_moved_number_once() -> None:
    own: dict[str, int] = {"a": 3, "b": 1, "<3": 7}
    beacon = TailBeacon(own, limit=100)
    assert beacon.untold() == {"a": 3, "b": 1}  # never the reserved topics
    beacon.told({"a": 3, "b": 1})
    assert beacon.untold() == {}
    own["a"] = 4
    own["c"] = 1
    assert beacon.untold() == {"a": 4, "c": 1}


def test_the_beacon_splits_many_topics_and_stays_bounded() -> None:
    own = {f"t{n}": 1 for n in range(MAX_BEACON_TOPICS + 5)}
    beacon = TailBeacon(own, limit=MAX_BEACON_TOPICS + 2)
    first = beacon.untold()
    assert len(first) == MAX_BEACON_TOPICS
    beacon.told(first)
    rest = beacon.untold()
    assert set(rest) == set(own) - set(first)
    beacon.told(rest)
    assert len(beacon._told) == MAX_BEACON_TOPICS + 2  # the oldest were forgotten


@pytest.mark.parametrize(
    ("data", "missed", "after"),
    [
        ({"seqs": {"t": 5}}, 3, 5),
        ({"seqs": {"t": 2}}, 0, 2),  # nothing missed
        ({"seqs": {"t": 1}}, 0, 2),  # older than what arrived: not a loss
        ({"seqs": {"u": 9}}, 0, 2),  # a topic never heard from this sender: cannot tell
        ({"seqs": {"t": "5"}}, 0, 2),
        ({"seqs": {"t": True}}, 0, 2),
        ({"seqs": {"t": 5.0}}, 0, 2),
        ({"seqs": [["t", 5]]}, 0, 2),
        ({"seqs": None}, 0, 2),
        ({"service": "x"}, 0, 2),  # the original's heartbeat
        ("not a map", 0, 2),
        ({"seqs": {7: 5}}, 0, 2),
    ],
)
def test_revealed_tail_counts_only_what_it_can_know(data: Any, missed: int, after: int) -> None:
    seen = {"t": 2}
    assert revealed_tail(seen, data, lambda topic: True) == missed
    assert seen["t"] == after


def test_a_topic_no_longer_heard_is_not_counted() -> None:
    seen = {"t": 2}
    assert revealed_tail(seen, {"seqs": {"t": 9}}, lambda topic: False) == 0
    assert revealed_tail(None, {"seqs": {"t": 9}}, lambda topic: True) == 0


# ---------------------------------------------------------------------------- on a bus


async def test_a_heartbeat_reveals_the_tail_once() -> None:
    url = f"memory://tail-{uuid.uuid4().hex}"
    async with nanomitter.connect(url) as injector, nanomitter.connect(url) as node:
        events, beats = Recorder(), Recorder()
        node.on("t", events)
        node.on("<3", beats)
        for seq in (1, 2):
            await injector.transport.send_raw(event_frame("peer-1", "t", seq))
        await injector.transport.send_raw(heartbeat_frame("peer-1", 1, {"seqs": {"t": 5}}))
        await beats.wait(1)
        assert node.stats().lost == 3
        await injector.transport.send_raw(heartbeat_frame("peer-1", 2, {"seqs": {"t": 5}}))
        await injector.transport.send_raw(event_frame("peer-1", "t", 6))  # continues: no gap
        await events.wait(3)
        assert node.stats().lost == 3
        assert node.stats().reordered == 0


@pytest.mark.parametrize("service", ["", "pricing"])
async def test_the_bye_counts_a_lost_tail(service: str) -> None:
    name = f"tail-{uuid.uuid4().hex}"
    events, beats = Recorder(), Recorder()
    async with nanomitter.connect(f"memory://{name}") as node:
        node.on("t", events)
        node.on("<3", beats)
        sender = DistributedEventEmitter(TailDroppingMemory(name, keep=7), service=service)
        async with sender:
            for n in range(1, 11):
                await sender.emit("t", n)
            await events.wait(7)
            if not service:  # no heartbeats, nothing after the gap: it cannot know yet
                assert node.stats().lost == 0
        await beats.wait_until(lambda: any(e.data.get("bye") for e in beats.events))
        assert node.stats().lost == 3
        assert [e.seq for e in events.events] == list(range(1, 8))


async def test_a_named_emitters_heartbeat_reveals_the_tail_while_it_runs() -> None:
    name = f"tail-{uuid.uuid4().hex}"
    events, beats = Recorder(), Recorder()
    async with nanomitter.connect(f"memory://{name}") as node:
        node.on("t", events)
        node.on("<3", beats)
        transport = TailDroppingMemory(name, keep=4)
        async with DistributedEventEmitter(
            transport, service="pricing", heartbeat_interval=0.05
        ) as sender:
            for n in range(1, 7):
                await sender.emit("t", n)
            await beats.wait_until(lambda: node.stats().lost == 2, timeout=20)
            beat = next(e for e in beats.events if "seqs" in e.data)
            assert beat.data["seqs"] == {"t": 6}
            transport.keep = 100
            await sender.emit("t", 7)  # the next one follows on: no second count
            await events.wait(5)
            assert node.stats().lost == 2


async def test_no_heartbeats_means_no_beacon() -> None:
    name = f"tail-{uuid.uuid4().hex}"
    everything = Recorder()
    async with nanomitter.connect(f"memory://{name}") as node:
        node.on("*", everything)
        async with DistributedEventEmitter(
            TailDroppingMemory(name, keep=1), heartbeat_interval=0
        ) as sender:
            await sender.emit("t", 1)
            await sender.emit("t", 2)
            await sender.emit("u", 1)  # after the lost one: the stream's end is known here
        await everything.wait(2)
        assert [e.topic for e in everything.events] == ["t", "u"]
        assert node.stats().lost == 0  # uncounted: heartbeat_interval=0 turns the beacon off


async def test_an_unnamed_emitter_that_emitted_nothing_sends_no_bye() -> None:
    url = f"memory://tail-{uuid.uuid4().hex}"
    everything = Recorder()
    async with nanomitter.connect(url) as node:
        node.on("*", everything)
        async with nanomitter.connect(url) as quiet:
            quiet.on("x", lambda event: None)
        async with nanomitter.connect(url) as talker:
            await talker.emit("x", 1)
        await everything.wait(2)
        assert [(e.topic, e.sender) for e in everything.events] == [
            ("x", talker.id),
            ("<3", talker.id),
        ]
        assert everything.events[1].data["seqs"] == {"x": 1}
        assert node.peers() == []  # a bye from an unannounced emitter is no presence


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # nats-py: asyncio only
async def test_a_filtering_transport_forgets_topics_nobody_listens_to(
    anyio_backend: str, nats_server: NatsServer
) -> None:
    """NATS filters by interest: events sent while nobody here listened are no loss, neither
    when a listener comes back nor when the sender's bye tells its last number."""
    first, second, beats = Recorder(), Recorder(), Recorder()
    async with nanomitter.connect(nats_server.url, heartbeat_interval=0) as node:
        node.on("t", first)
        node.on("<3", beats)
        await node.listening()
        async with nanomitter.connect(nats_server.url) as sender:
            await sender.emit("t", 1)
            await first.wait(1)
            node.off("t", first)
            await node.listening()  # the server no longer sends "t" here
            for n in range(2, 6):
                await sender.emit("t", n)
            await sender.listening()  # its flush: the server has 2..5 (nats-py writes later)
            node.on("t", second)
            await node.listening()
            await sender.emit("t", 6)
            await second.wait(1)
            assert [e.seq for e in first.events + second.events] == [1, 6]
            assert node.stats().lost == 0
        await beats.wait_until(lambda: any(e.data.get("bye") for e in beats.events))
        assert beats.events[-1].data["seqs"] == {"t": 6}
        assert node.stats().lost == 0
