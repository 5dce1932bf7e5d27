"""Rules 1-3: every event reaches every matching listener once, in emit order, listeners in
registration order; also between processes."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import anyio.lowlevel

from ...core.event import DistributedEvent
from ...core.subscription import Subscription
from ...core.topics import pattern_matches
from ..harness import (
    PROBE_INTERVAL,
    CheckSkipped,
    Cluster,
    MakeURL,
    Node,
    Recorder,
    current_backend,
    current_deadline,
    expected_numbers,
    fresh_url,
    verify_stream,
)
from ..traffic import numbered


async def check_exactly_once(make_url: MakeURL, *, count: int = 50) -> None:
    """Rule 1: every event reaches every matching listener on every node exactly once.

    Four emitters (A, B with ``echo=True``; C, D with ``echo=False``) each emit ``count``
    events while listening with exact, ``*``-token, ``>``-tail and bare ``*`` patterns, sync
    and async. Own events must reach own listeners only with ``echo=True``; nothing may
    arrive twice (a hub echoing back, two patterns matching, a transport resending), and the
    sender's sequence number must survive the trip.
    """
    url, _ = fresh_url(make_url)
    cluster = Cluster(url)
    nodes = [
        cluster.node("A"),
        cluster.node("B"),
        cluster.node("C", echo=False),
        cluster.node("D", echo=False),
    ]
    topic = "once.t"
    recorders = {
        node.name: [
            *(cluster.recorder(node, p) for p in (topic, "once.*", "once.>", "*")),
            cluster.recorder(node, topic, kind="async"),
        ]
        for node in nodes
    }

    def topic_for(n: int) -> str:
        return topic

    async with cluster, anyio.create_task_group() as tg:
        for sender in nodes:
            waiting = [
                r for node in nodes if node is not sender or node.echo for r in recorders[node.name]
            ]
            tg.start_soon(cluster.stream, sender, count, topic_for, waiting)

    for node in nodes:
        for recorder in recorders[node.name]:
            for sender in nodes:
                if sender is node and not node.echo:
                    if recorder.heard_from(node.name):
                        raise AssertionError(
                            f"node {node.name} has echo=False, yet its own events reached its "
                            f"{recorder.label} (own events reach own listeners only with "
                            "echo=True)"
                        )
                    continue
                verify_stream(recorder, sender.name, range(1, count + 1), topic_for, ordered=False)
            for event in recorder.events:
                data = event.data
                if type(data) is dict and type(data.get("n")) is int and event.seq != data["n"]:
                    raise AssertionError(
                        f"event {event.topic!r} #{data['n']} from node "
                        f"{cluster.name_of(event.sender)} reached {recorder.label} with "
                        f"seq={event.seq}; the transport must carry the sender's sequence "
                        "number unchanged (receivers count lost events with it)"
                    )

    await _check_inline_echo(make_url)


async def _check_inline_echo(make_url: MakeURL) -> None:
    """With echo=True an emitter's own sync listeners have run when ``emit`` returns."""
    url, _ = fresh_url(make_url)
    cluster = Cluster(url)
    a, b, c = cluster.node("A"), cluster.node("B"), cluster.node("C", echo=False)
    own = {node.name: cluster.recorder(node, "inline.t") for node in (a, b, c)}
    async with cluster:
        for node in (a, b, c):
            await node.bus.emit("inline.t", numbered(node.name, 1))
            heard = own[node.name].count_from(node.name)
            if node.echo and heard != 1:
                raise AssertionError(
                    f"node {node.name} (echo=True) emitted 'inline.t' and its own listener had "
                    f"been called {heard} times when emit() returned; it must be called once, "
                    "during emit, like Node's EventEmitter"
                )
            if not node.echo and heard:
                raise AssertionError(
                    f"node {node.name} (echo=False) emitted 'inline.t' and its own listener "
                    "was called"
                )


async def check_order_under_load(make_url: MakeURL, *, count: int = 10_000) -> None:
    """Rule 2: events from one emitter reach each listener in emit order, even flat out.

    A and B each emit ``count`` events as fast as they can, alternating two topics, while C
    (``echo=False``) and both senders listen with sync, async and pull-style listeners.
    Every listener must see each sender's events in increasing order. Brokerless transports
    may lose some under load, but only if the receiver counts them (``lost``/``dropped``).
    """
    url, _ = fresh_url(make_url)
    cluster = Cluster(url)
    queue = 2 * count + 100
    a = cluster.node("A", listener_queue_size=queue)
    b = cluster.node("B", listener_queue_size=queue)
    c = cluster.node("C", echo=False, listener_queue_size=queue)
    nodes = [a, b, c]
    recorders = {
        node.name: [
            cluster.recorder(node, "*"),
            cluster.recorder(node, "load.*"),
            cluster.recorder(node, "load.x"),
            cluster.recorder(node, "load.>", kind="async"),
        ]
        for node in nodes
    }
    pulled = Recorder(c, "load.>", kind="pull")
    recorders[c.name].append(pulled)
    subscription = await cluster.subscribe(c, "load.>", capacity=queue)

    def topic_for(n: int) -> str:
        return "load.x" if n % 2 else "load.y"

    async with cluster, anyio.create_task_group() as tg:
        tg.start_soon(_pull, subscription, pulled)
        async with anyio.create_task_group() as senders:
            for sender in (a, b):
                waiting = [
                    r
                    for node in nodes
                    if node is not sender or node.echo
                    for r in recorders[node.name]
                ]
                senders.start_soon(cluster.stream, sender, count, topic_for, waiting)
        tg.cancel_scope.cancel()

    for node in nodes:
        for recorder in recorders[node.name]:
            for sender in (a, b):
                if sender is node and not node.echo:
                    continue
                verify_stream(
                    recorder,
                    sender.name,
                    expected_numbers(recorder.pattern, count, topic_for),
                    topic_for,
                    ordered=True,
                    loss_allowed_if_counted=True,
                )


async def _pull(subscription: Subscription, recorder: Recorder) -> None:
    async for event in subscription:
        recorder.note(event)


async def check_registration_order(make_url: MakeURL) -> None:
    """Rule 3: listeners on one node fire in registration order, exact and wildcard alike.

    B registers bare ``*``, ``reg.*``, ``reg.>`` and exact listeners interleaved (plus a
    ``once`` and one listener moved to the end by ``off`` + ``on``); C registers the same in
    reverse. Events from A, B and C (remote and echoed) must call them in that order, and
    only those whose pattern matches the topic.
    """
    url, _ = fresh_url(make_url)
    cluster = Cluster(url)
    a, b, c = cluster.node("A"), cluster.node("B"), cluster.node("C")
    plan: list[tuple[str, str, bool]] = [
        ("*", "any-1", False),
        ("reg.*", "one-1", False),
        ("reg.x", "exact-1", False),
        ("reg.>", "tail-1", False),
        ("reg.>", "once", True),
        ("reg.x", "exact-2", False),
        ("*", "any-2", False),
        ("reg.*", "one-2", False),
        ("reg.>", "tail-2", False),
    ]
    logs: dict[str, list[tuple[tuple[str, str, int], str]]] = {"B": [], "C": []}
    orders: dict[str, list[tuple[str, str, bool]]] = {}

    def make_listener(node: Node, label: str) -> Callable[[DistributedEvent], None]:
        def listener(event: DistributedEvent) -> None:
            if event.topic.startswith("reg"):
                key = (cluster.name_of(event.sender), event.topic, event.seq)
                logs[node.name].append((key, label))
                cluster.signal.pulse()

        listener.__qualname__ = f"{label}@{node.name}"
        return listener

    for node, entries in ((b, plan), (c, plan[::-1])):
        moved = make_listener(node, "moved")
        node.bus.on("reg.*", moved)
        for pattern, label, once in entries:
            listener = make_listener(node, label)
            if once:
                node.bus.once(pattern, listener)
            else:
                node.bus.on(pattern, listener)
        if not node.bus.off("reg.*", moved):
            raise AssertionError(f"off('reg.*', listener) on node {node.name} returned False")
        node.bus.on("reg.*", moved)
        orders[node.name] = [*entries, ("reg.*", "moved", False)]

    topics = ["reg.x", "reg.x.y", "reg.z", "reg"]

    def calls_for(order: list[tuple[str, str, bool]], topic: str) -> int:
        return sum(1 for pattern, _, once in order if not once and pattern_matches(pattern, topic))

    expected_total = {
        name: 3 * sum(calls_for(order, t) for t in topics)
        + (1 if any(once for *_, once in order) else 0)
        for name, order in orders.items()
    }

    async with cluster:
        for sender in (a, b, c):
            for topic in topics:
                await sender.bus.emit(topic, {"node": sender.name})
        for name, total in expected_total.items():
            log = logs[name]
            await _expect_calls(cluster, name, log, total)

    for name, order in orders.items():
        per_event: dict[tuple[str, str, int], list[str]] = {}
        for key, label in logs[name]:
            per_event.setdefault(key, []).append(label)
        once_pending = True
        for (origin, topic, seq), labels in per_event.items():
            want = [
                label
                for pattern, label, once in order
                if pattern_matches(pattern, topic) and (not once or once_pending)
            ]
            if "once" in want:
                once_pending = False
            if labels != want:
                raise AssertionError(
                    f"event {topic!r} #{seq} from node {origin} called node {name}'s listeners "
                    f"in the order {labels}; registration order is {want} (listeners fire in "
                    "registration order, exact and wildcard alike, each once)"
                )
        if len(per_event) != 3 * len(topics):
            raise AssertionError(
                f"node {name} dispatched {len(per_event)} distinct events, expected "
                f"{3 * len(topics)} (3 senders x {len(topics)} topics)"
            )


async def check_across_processes(make_url: MakeURL, *, count: int = 200) -> None:
    """Rules 1 and 2 across processes: this process and two peers in processes of their own.

    Needs ``capabilities.crosses_processes``. Each of the three emits ``count`` numbered
    events; each must receive the other two's events exactly once and in order (the peers
    check their side and report). The peers run :mod:`nanomitter.conformance.peer`.
    """
    url, capabilities = fresh_url(make_url)
    if not capabilities.crosses_processes:
        raise CheckSkipped("the transport does not cross processes (crosses_processes=False)")
    from ..processes import spawn_peer

    cluster = Cluster(url)
    local = cluster.node("A")
    recorder = cluster.recorder(local, "xproc.>")
    heard_locally: set[str] = set()
    probe = "xproc.sync"  # matched by "xproc.>": hearing it proves that interest is active

    def on_probe(event: DistributedEvent) -> None:
        heard_locally.add(event.sender)
        cluster.signal.pulse()

    local.bus.on(probe, on_probe)
    backend = current_backend()
    async with (
        cluster,
        spawn_peer(url, name="P1", backend=backend) as p1,
        spawn_peer(url, name="P2", backend=backend, echo=False) as p2,
    ):
        peers = [p1, p2]
        for peer in peers:
            cluster.alias(peer.id, peer.name)
            await peer.listen("xproc.>")
        everyone = {local.bus.id, p1.id, p2.id}

        def local_done() -> bool:
            return heard_locally >= {p1.id, p2.id}

        with anyio.move_on_after(current_deadline()):
            while True:
                await local.bus.emit(probe, {"node": "A"})
                heard = [await peer.ping(probe) for peer in peers]
                if local_done() and all(
                    h >= everyone - {peer.id} for h, peer in zip(heard, peers, strict=True)
                ):
                    break
                await anyio.sleep(PROBE_INTERVAL)  # retry pacing, not synchronisation
        local.bus.off(probe, on_probe)
        if not local_done() or not all(
            h >= everyone - {peer.id} for h, peer in zip(heard, peers, strict=True)
        ):
            raise AssertionError(
                f"this process and two peer processes on {url} could not all hear each other "
                f"within {current_deadline():g} s"
            )
        for peer in peers:
            await peer.emit("xproc.t", count)
        for n in range(1, count + 1):
            await local.bus.emit("xproc.t", numbered("A", n))
        for peer in peers:
            got = await peer.wait("xproc.>", 2 * count, within=current_deadline())
            if got < 2 * count:
                raise AssertionError(
                    f"peer {peer.name} (another process) got {got} of the {2 * count} events "
                    f"this process and the other peer emitted; its report: {await peer.report()}"
                )
        for peer in peers:
            await recorder.expect(count, sender=peer.name, why="sent from another process")
        for peer in peers:
            listener = (await peer.report())["listeners"]["xproc.>"]
            if listener["duplicates"] or listener["out_of_order"]:
                raise AssertionError(
                    f"peer {peer.name} (another process) saw {listener['duplicates']} "
                    f"duplicate and {listener['out_of_order']} out-of-order events"
                )
            if listener["corrupted"]:
                raise AssertionError(
                    f"peer {peer.name} (another process) got {listener['corrupted']} events "
                    f"whose data the transport changed, first {listener['first_corrupted']}"
                )
    for peer in peers:
        verify_stream(recorder, peer.name, range(1, count + 1), lambda n: "xproc.t", ordered=True)


async def _expect_calls(
    cluster: Cluster, name: str, log: list[tuple[tuple[str, str, int], str]], total: int
) -> None:
    def failure() -> str:
        return (
            f"node {name}'s listeners were called {len(log)} times, expected {total} "
            "(3 senders x 4 topics x matching listeners)"
        )

    await cluster.signal.expect(lambda: len(log) >= total, failure)
