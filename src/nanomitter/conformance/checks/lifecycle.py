"""Rules 7-8: ``aclose()`` flushes and leaves nothing behind; traffic resumes after a hub
restart."""

from __future__ import annotations

import os
import sys
import threading
from collections import Counter
from collections.abc import Callable

import anyio
import anyio.lowlevel

from ...core.errors import ConnectionStateChanged
from ...core.event import DistributedEvent
from ..harness import (
    CheckSkipped,
    Cluster,
    MakeURL,
    Recorder,
    current_deadline,
    fresh_url,
    verify_stream,
)
from ..traffic import numbered
from .common import RestartHub
from .delivery import _pull


async def check_close_flushes(make_url: MakeURL, *, count: int = 200) -> None:
    """Rule 7: ``aclose()`` flushes what was emitted before it.

    A emits ``count`` events and closes at once: B and C must still get every one, and A's
    own async listener must have handled all of them when ``aclose()`` returns. Then B
    closes while its async listener still has a backlog: the backlog must be handled before
    ``aclose()`` returns.
    """
    url, _ = fresh_url(make_url)
    cluster = Cluster(url)
    c = cluster.node("C")
    b = cluster.node("B")
    a = cluster.node("A")  # opened last, so it can be closed first
    topic = "close.t"
    a_async = cluster.recorder(a, topic, kind="async")
    sync = {node.name: cluster.recorder(node, topic) for node in (b, c)}
    c_async = cluster.recorder(c, topic, kind="async")
    gate = anyio.Event()
    b_async = Recorder(b, topic, kind="async", register=False)

    async def gated(event: DistributedEvent) -> None:
        await gate.wait()
        await anyio.lowlevel.checkpoint()
        b_async.note(event)

    b.bus.on(topic, gated)

    async with cluster:
        try:
            for n in range(1, count + 1):
                await a.bus.emit(topic, numbered("A", n))
            await a.close()
            if a_async.count_from("A") != count:
                raise AssertionError(
                    f"node A's async listener had handled {a_async.count_from('A')} of the {count} "
                    "events A emitted when aclose() returned; aclose must let async listeners "
                    "finish what was queued before it"
                )
            for recorder in [*sync.values(), c_async]:
                await recorder.expect(
                    count,
                    sender="A",
                    why="node A emitted them right before aclose(), which must flush them",
                )
            gate.set()  # no checkpoint between this and the close: B's backlog is still queued
            await b.close()
            if b_async.count_from("A") != count:
                raise AssertionError(
                    f"node B closed with its async listener's queue full; when aclose() returned "
                    f"the listener had handled {b_async.count_from('A')} of {count} events"
                )
        finally:
            gate.set()  # never leave B's listener parked (its close would wait it out)

    for recorder in (a_async, *sync.values(), c_async, b_async):
        verify_stream(recorder, a.name, range(1, count + 1), lambda n: topic, ordered=True)


async def check_no_leaked_tasks(make_url: MakeURL) -> None:
    """Rule 7: after ``aclose()`` no task, thread or file descriptor of the bus is left.

    Three emitters with async listeners, a subscription and ``wait_for`` run traffic and
    close; then three more are cancelled in the middle of traffic. The running tasks,
    threads and (where ``/proc/self/fd`` exists) open file descriptors must be those from
    before (a warm-up round first lets lazily created pools and selectors appear).
    """
    url, _ = fresh_url(make_url)
    await _leak_round(url)  # warm-up: lazily started thread pools etc. are not leaks
    tasks = {task.id for task in anyio.get_running_tasks()}
    threads = set(threading.enumerate())
    fds = _open_fds()

    await _leak_round(make_url())
    await _leak_round(make_url(), cancel_midway=True)

    left = [task for task in anyio.get_running_tasks() if task.id not in tasks]
    if left:
        shown = ", ".join(repr(task.name) for task in left)
        raise AssertionError(f"tasks still running after every emitter closed: {shown}")

    def leaked_threads() -> list[threading.Thread]:
        return [
            t
            for t in threading.enumerate()
            if t not in threads and t.is_alive() and not t.name.startswith(_POOL_THREADS)
        ]

    def leaked_fds() -> dict[int, str]:
        now = _open_fds()
        return {fd: target for fd, target in now.items() if fds.get(fd) != target}

    await _settle(lambda: not leaked_threads() and not leaked_fds())
    if extra := leaked_threads():
        counted = Counter(t.name for t in extra)
        raise AssertionError(
            "threads still alive after every emitter closed: "
            + ", ".join(f"{name!r}" + (f" (x{k})" if k > 1 else "") for name, k in counted.items())
        )
    if extra_fds := leaked_fds():
        shown = ", ".join(f"{fd} -> {target}" for fd, target in sorted(extra_fds.items()))
        raise AssertionError(f"file descriptors still open after every emitter closed: {shown}")


_POOL_THREADS = ("AnyIO worker thread", "Trio thread", "asyncio_")
"""Idle worker threads of the event loops' own pools: reused, and they exit on their own."""


async def _leak_round(url: str, *, cancel_midway: bool = False) -> None:
    cluster = Cluster(url)
    nodes = [cluster.node("A"), cluster.node("B", echo=False), cluster.node("C")]
    recorders = [cluster.recorder(node, "leak.>", kind="async") for node in nodes]
    count = 20
    pulled = Recorder(nodes[2], "leak.>", kind="pull")
    with anyio.CancelScope() as scope:
        subscription = await cluster.subscribe(nodes[2], "leak.>", capacity=64)
        async with cluster, anyio.create_task_group() as tg:
            tg.start_soon(_pull, subscription, pulled)
            waiter_ready = anyio.Event()

            async def wait_for_last() -> None:
                waiter_ready.set()
                await nodes[1].bus.wait_for("leak.last", timeout=current_deadline())

            tg.start_soon(wait_for_last)
            await waiter_ready.wait()
            for n in range(1, count + 1):
                await nodes[0].bus.emit("leak.t", numbered("A", n))
                if cancel_midway and n == count // 2:
                    scope.cancel()
            await nodes[0].bus.emit("leak.last", numbered("A", count + 1))
            for recorder in recorders[1:]:
                await recorder.expect(count, sender="A")
            tg.cancel_scope.cancel()
    if cancel_midway and not scope.cancelled_caught:
        raise AssertionError("cancelling the emitters' scope mid-traffic did not cancel it")


def _open_fds() -> dict[int, str]:
    """Open file descriptors -> what they point at (empty where /proc is unavailable)."""
    root = "/proc/self/fd"
    if not sys.platform.startswith("linux") or not os.path.isdir(root):
        return {}
    found: dict[int, str] = {}
    for entry in os.listdir(root):
        try:
            found[int(entry)] = os.readlink(f"{root}/{entry}")
        except OSError:  # closed while listing (the listing's own descriptor)
            continue
    return found


async def _settle(done: Callable[[], bool]) -> None:
    """Give threads and sockets released by ``aclose`` a moment (2 s at most) to finish."""
    with anyio.move_on_after(min(2.0, current_deadline())):
        while not done():  # noqa: ASYNC110 (nothing signals a thread's exit; poll briefly)
            await anyio.sleep(0.02)


async def check_reconnects(make_url: MakeURL, *, restart_hub: RestartHub | None = None) -> None:
    """Rule 8: after the hub, proxy or server restarts, traffic resumes without user action.

    Needs a ``restart_hub(url)`` hook from the transport's author (memory:// has no hub).
    Three emitters exchange events, the hub restarts, and each emitter then probes until
    everyone hears everyone again within the deadline; after that, fenced streams from all
    three must arrive exactly once and in order.
    """
    url, _ = fresh_url(make_url)
    if restart_hub is None:
        raise CheckSkipped(
            "rule 8 needs a restart_hub(url) hook: run_check(..., restart_hub=...) or "
            "run_all(..., restart_hub=...)"
        )
    cluster = Cluster(url)
    cluster.provokes(ConnectionStateChanged)
    nodes = [cluster.node("A"), cluster.node("B"), cluster.node("C", echo=False)]
    before = {node.name: cluster.recorder(node, "before.t") for node in nodes}
    after = {node.name: cluster.recorder(node, "after.t") for node in nodes}
    async with cluster:
        for sender in nodes:
            await sender.bus.emit("before.t", numbered(sender.name, 1))
        for node in nodes:
            others = [m.name for m in nodes if m is not node]
            recorder = before[node.name]
            for other in others:
                await recorder.expect(1, sender=other, why="before the hub restarted")
        await restart_hub(url)
        try:
            await cluster.handshake()
        except AssertionError as exc:
            raise AssertionError(f"after restart_hub(): {exc}") from exc
        count = 20
        async with anyio.create_task_group() as tg:
            for sender in nodes:
                waiting = [after[node.name] for node in nodes if node is not sender or node.echo]
                tg.start_soon(cluster.stream, sender, count, lambda n: "after.t", waiting)
    for node in nodes:
        for sender in nodes:
            if sender is node and not node.echo:
                continue
            verify_stream(
                after[node.name],
                sender.name,
                range(1, count + 1),
                lambda n: "after.t",
                ordered=True,
            )
