"""Rule 6: loss is never silent (sequence gaps in ``lost``, full queues in ``dropped``)."""

from __future__ import annotations

import anyio
import anyio.lowlevel

from ...core.errors import (
    OverflowProblem,
)
from ...core.event import DistributedEvent
from ..harness import (
    CheckSkipped,
    Cluster,
    MakeURL,
    fresh_url,
)
from ..traffic import numbered
from .errors import _codec_of


async def check_loss_is_counted(make_url: MakeURL) -> None:
    """Rule 6: sequence gaps are counted in ``stats().lost``; loss is never silent.

    Needs ``capabilities.raw_frames``. A injects numbered events from a foreign sender with
    gaps (1, 2, 5, 6, 10: seven missing events); B and C must deliver the five and count
    ``lost == 5``. Events of a real emitter carry the numbers (see check_exactly_once).
    """
    url, capabilities = fresh_url(make_url)
    if not capabilities.raw_frames:
        raise CheckSkipped("the transport cannot inject raw frames (capabilities.raw_frames)")
    cluster = Cluster(url)
    a, b, c = cluster.node("A"), cluster.node("B"), cluster.node("C")
    receivers = [b, c]
    recorders = {node.name: cluster.recorder(node, "gap.>") for node in receivers}
    seqs = [1, 2, 5, 6, 10]
    gaps = (5 - 2 - 1) + (10 - 6 - 1)
    async with cluster:
        codec = _codec_of(a)
        for seq in seqs:
            event = DistributedEvent(
                topic="gap.t", data={"seq": seq}, sender="conformance-gappy-sender", seq=seq
            )
            await a.bus.transport.send_raw(codec.encode(event))
        for node in receivers:
            recorder = recorders[node.name]
            await recorder.expect(len(seqs))
            lost = node.bus.stats().lost
            if lost != gaps:
                raise AssertionError(
                    f"node {node.name} received a sender's events numbered {seqs} and counted "
                    f"lost={lost}; the {gaps} missing numbers (3-4, 7-9) must be counted"
                )


async def check_bounded_queues(make_url: MakeURL, *, count: int = 30) -> None:
    """Rule 6: queues are bounded and overflow is counted in ``dropped``, never silent.

    A emits ``count`` events. On B a stalled async listener has a 4-event queue; on C a
    subscription of capacity 3 is never read. Each overflow must be counted in ``dropped``
    and reported as ``OverflowProblem``, without stalling the sync listeners on the same
    nodes, and the stalled listener must get what its queue held once it resumes.
    """
    url, _ = fresh_url(make_url)
    cluster = Cluster(url)
    cluster.provokes(OverflowProblem)
    a = cluster.node("A")
    queue_size, capacity = 4, 3
    b = cluster.node("B", listener_queue_size=queue_size)
    c = cluster.node("C")
    topic = "bound.t"
    release = anyio.Event()
    stalled: list[DistributedEvent] = []

    async def stalled_listener(event: DistributedEvent) -> None:
        stalled.append(event)
        cluster.signal.pulse()
        await release.wait()

    b.bus.on(topic, stalled_listener)
    await cluster.subscribe(c, topic, capacity=capacity)  # never read
    # registered after the stalled listener and the subscription, so dispatched after them
    counters = {node.name: cluster.recorder(node, topic) for node in (b, c)}
    async with cluster:
        try:
            for n in range(1, count + 1):
                await a.bus.emit(topic, numbered("A", n))
            for node in (b, c):
                recorder = counters[node.name]
                await recorder.expect(
                    count,
                    sender="A",
                    why="another listener on its node was stalled, and a slow listener must "
                    "stall nothing else",
                )
            c_dropped = c.bus.stats().dropped
            if c_dropped != count - capacity:
                raise AssertionError(
                    f"node C: a subscription of capacity {capacity} that is never read got "
                    f"{count} events; stats().dropped = {c_dropped}, expected "
                    f"{count - capacity}"
                )
            b_dropped = b.bus.stats().dropped
            low, high = count - queue_size - 1, count - queue_size
            if not low <= b_dropped <= high:
                raise AssertionError(
                    f"node B: an async listener stalled on its first event with a "
                    f"{queue_size}-event queue got {count} events; stats().dropped = "
                    f"{b_dropped}, expected {low}..{high}"
                )
            for node, dropped in ((b, b_dropped), (c, c_dropped)):
                reports = len(node.problems_of(OverflowProblem))
                if reports != dropped:
                    raise AssertionError(
                        f"node {node.name} dropped {dropped} events but its error hook got "
                        f"{reports} OverflowProblem reports (every drop must be reported)"
                    )
            release.set()
            accepted = count - b_dropped
            await cluster.signal.expect(
                lambda: len(stalled) >= accepted,
                lambda: (
                    f"the stalled async listener on node B resumed and got {len(stalled)} "
                    f"events; its queue had accepted {accepted}"
                ),
            )
            numbers = [event.data["n"] for event in stalled]
            if numbers != sorted(numbers) or numbers[0] != 1:
                raise AssertionError(
                    f"the stalled async listener on node B got events {numbers}; the queue "
                    "must keep what it accepted, in order, dropping the newest when full"
                )
            if a.bus.stats().dropped:
                raise AssertionError("node A dropped events, but none of its queues was full")
        finally:
            release.set()
