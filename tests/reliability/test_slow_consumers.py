"""Slow consumers (issue 8, item 3): a stalled async listener must cost its own events only.

On each transport one node (its own process; on ``memory://`` it shares the process with the
publisher) listens on ``tick`` with four listeners: a fast sync one, an async one stalled
until released, a fast async one, and an async one that takes 1 s per event. A publisher
(another process on nng, ZeroMQ and NATS, behind a hub process or a nats-server) emits flat
out for 5 s (``make test``) or ``min(60, soak_seconds())`` (``make soak``). Then the publisher
closes, the stalled listeners are released and the node closes, which lets them drain what
their queues accepted. Asserted on the node:

- its resident memory stays under its baseline (after connecting) + 50 MB (ZeroMQ: + 150 MB,
  see RSS_BOUND_MB), sampled every second and by the kernel's high-water mark (VmHWM);
- the fast listeners keep up: each got every event the node received (``stats().received``);
  what the bus lost on the way is counted apart, in ``lost``, and equals the gaps the fast
  sync listener saw;
- ``stats().dropped`` equals exactly what the async listeners did not get (received minus
  what each was called with; on NATS plus what its receive queue held at the close),
  the stalled one was called once before its release, and nothing else went wrong (no
  reordering, decode or listener errors);
- the error hook got one ``OverflowProblem`` per drop, naming the listener, and the default
  hook's log let at most one line a second through.

``make test`` runs the transports side by side, once with nodes on asyncio and once on trio
(NATS: asyncio only); ``make soak`` runs all four side by side once, nodes on trio for
``memory://`` and ZeroMQ, asyncio for nng and NATS.
"""

from __future__ import annotations

import math
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import pytest
from soak_support import (
    MB,
    Fleet,
    RssSampler,
    bus_for,
    publish_report,
    rss_of,
    soak_seconds,
    table,
)

pytestmark = pytest.mark.anyio

TEST_SECONDS = 5.0
RSS_BOUND_MB = {"memory": 50.0, "nng": 50.0, "zmq": 150.0, "nats": 50.0}
"""How much the node's resident memory may grow over its baseline. ZeroMQ's is larger by
design: its SUB socket queues up to recv_hwm = 10 000 messages of up to 64 coalesced events
(about 640 000 of these small events; the node's RSS levels off near +90 MB under a flood)."""
QUEUE = 1024  # the default listener_queue_size
EXPECTED_PROBLEMS = {"dropped"}
"""Problem kinds a flooded node may report. On NATS also a disconnect and reconnect: a
server cuts off a client that falls max_pending (64 MiB) behind; it reconnects by itself."""
NATS_EXPECTED = EXPECTED_PROBLEMS | {"disconnected", "reconnected"}


async def flood(transport: str, backend: str, seconds: float, directory: Path) -> dict[str, Any]:
    """Run one node under a flat-out publisher for ``seconds``; return its figures."""
    async with AsyncExitStack() as stack:
        fleet = Fleet(stack)
        if transport == "memory":
            node = await fleet.role("node", "slow-memory", backend, speaks_for=["pub"])
        else:
            url, _ = await stack.enter_async_context(bus_for(transport, fleet, directory))
            node = await fleet.role("node", "slow-node", url, backend)
        await fleet.expect("node", "ready")
        baseline = rss_of(node.pid) or 0  # connected, listeners registered, no traffic yet
        if transport != "memory":
            await fleet.role("pub", "publisher", url, "asyncio")
        await fleet.expect("pub", "ready")
        await fleet.expect("node", "primed")
        sampler = RssSampler()
        sampler.watch("node", node.pid)
        async with anyio.create_task_group() as tg:
            tg.start_soon(sampler.run)
            started = time.monotonic()
            await fleet.send("pub", f"burst {seconds}")
            burst = await fleet.expect("pub", "burst", timeout=seconds + 60)
            await fleet.send("pub", "quit")
            await fleet.expect("pub", "closed")
            await fleet.send("node", "finish")
            final = await fleet.expect("node", "final", timeout=60)
            sampler.sample()
            tg.cancel_scope.cancel()
        rss = [r for _, r in sampler.samples["node"]]
        return {
            "transport": transport,
            "backend": backend,
            "seconds": time.monotonic() - started,
            "published": burst["sent"],
            "baseline_mb": baseline / MB,
            "max_mb": max([*rss, final["hwm"]]) / MB,
            "sampled_max_mb": max(rss) / MB,
            "hwm_mb": final["hwm"] / MB,
            "final": final,
            "rss_series_mb": [round(r / MB, 1) for r in rss],
        }


def read_not_dispatched(final: dict[str, Any]) -> int:
    """Events the transport read but never handed to the emitter (NATS's receive queue when
    the node closed, and what nats-py still read while closing); 0 on other transports."""
    transport = final["transport"]
    if "received" not in transport:
        return 0
    read = transport["received"] - transport.get("recv_dropped", 0)
    return int(read - final["stats"]["received"])


def check(result: dict[str, Any]) -> list[str]:
    """What went wrong on one node (empty: nothing)."""
    final = result["final"]
    stats, counts = final["stats"], final["counts"]
    received = stats["received"]
    overflow = final["overflow"]
    missed = {name: received - counts[name] for name in ("forever", "sleepy", "async")}
    failures = []

    def expect(ok: bool, text: str) -> None:
        if not ok:
            failures.append(f"{result['transport']}/{result['backend']}: {text}")

    expect(received > 4 * QUEUE, f"the flood must overrun the stalled queues: {received}")
    expect(counts["sync"] == received, f"sync listener got {counts['sync']} of {received}")
    expect(missed["async"] == 0, f"fast async listener got {counts['async']} of {received}")
    stalled = final["before_release"]["forever"]
    expect(stalled == 1, f"the stalled listener ran {stalled} times before its release")
    for name in ("forever", "sleepy"):
        dropped = missed[name]
        expect(dropped > 0, f"{name} missed nothing")
        reports = sum(n for where, n in overflow.items() if where.endswith(f"stalled_{name}"))
        expect(reports == dropped, f"{name}: {reports} OverflowProblems for {dropped} drops")
    # dropped = what the async listeners missed, plus (NATS) what its receive queue held
    # when the emitter closed; what nats-py reads after that is neither received nor dropped,
    # and a receive-queue overflow counts in lost (a gap), not in dropped
    listeners = sum(missed.values())
    closing = stats["dropped"] - listeners
    unread = read_not_dispatched(final)
    expect(
        0 <= closing <= unread,
        f"dropped {stats['dropped']} != {listeners} missed by the listeners ({missed}) "
        f"+ 0..{unread} read but not dispatched",
    )
    expect(stats["lost"] == final["observed"], f"lost {stats['lost']} != {final['observed']}")
    for name in ("reordered", "decode_errors", "invalid", "listener_errors"):
        expect(stats[name] == 0, f"{name} = {stats[name]}")
    expect(final["backwards"] == 0, f"{final['backwards']} events out of order")
    lines = final["log_dropped_lines"]  # the default hook: one line a second per kind
    limit = math.ceil(final["lifetime"]) + 1
    expect(lines >= 1, f"the default hook logged no drop: {final['log_samples']}")
    expect(lines <= limit, f"{lines} 'dropped' log lines in {limit - 1} s")
    kinds = {kind.split(":", 1)[1] for kind in final["problems"]}
    allowed = NATS_EXPECTED if result["transport"] == "nats" else EXPECTED_PROBLEMS
    expect(kinds <= allowed, f"unexpected problems {final['problems']}: {final['problem_texts']}")
    growth = result["max_mb"] - result["baseline_mb"]
    bound = RSS_BOUND_MB[result["transport"]]
    expect(growth < bound, f"RSS grew {growth:.1f} MB (bound {bound:g} MB)")
    return failures


def listener_reports(final: dict[str, Any]) -> int:
    return sum(n for where, n in final["overflow"].items() if where.startswith("async listener"))


def rows(results: list[dict[str, Any]]) -> list[list[object]]:
    out: list[list[object]] = []
    for r in results:
        final = r["final"]
        stats = final["stats"]
        received = stats["received"]
        base, peak = r["baseline_mb"], r["max_mb"]
        out.append(
            [
                r["transport"],
                r["backend"],
                f"{r['seconds']:.0f} s",
                f"{r['published']:,}",
                f"{received:,}",
                f"{stats['lost']:,} / {final['observed']:,}",
                f"{final['counts']['sync']:,} / {final['counts']['async']:,}",
                f"{final['counts']['forever']:,} / {final['counts']['sleepy']:,}",
                f"{stats['dropped']:,}",
                f"{listener_reports(final):,} / {final['log_dropped_lines']}",
                f"{base:.1f} → {peak:.1f} (+{peak - base:.1f})",
            ]
        )
    return out


HEADER = [
    "transport",
    "node loop",
    "flood",
    "published",
    "node received",
    "lost: stats / gaps seen",
    "fast sync / fast async got",
    "stalled / 1 s-per-event got",
    "dropped",
    "OverflowProblems / log lines",
    "node RSS MB: baseline → max (growth)",
]


async def flood_all(
    plan: list[tuple[str, str]], seconds: float, directory: Path
) -> list[dict[str, Any]]:
    results: dict[tuple[str, str], dict[str, Any]] = {}

    async def one(transport: str, backend: str) -> None:
        results[transport, backend] = await flood(
            transport, backend, seconds, directory / f"{transport}-{backend}"
        )

    async with anyio.create_task_group() as tg:
        for transport, backend in plan:
            tg.start_soon(one, transport, backend)
    return [results[key] for key in plan]


@pytest.mark.timeout(120)
async def test_stalled_listeners_cost_only_their_own_events(
    anyio_backend: str, tmp_path: Path
) -> None:
    transports = ["memory", "nng", "zmq"] + (["nats"] if anyio_backend == "asyncio" else [])
    results = await flood_all([(t, anyio_backend) for t in transports], TEST_SECONDS, tmp_path)
    print(table(HEADER, rows(results)))
    verdict(results)


def verdict(results: list[dict[str, Any]]) -> None:
    failures = [failure for result in results for failure in check(result)]
    assert not failures, "\n".join(failures)


@pytest.mark.soak
@pytest.mark.timeout(int(min(60.0, soak_seconds())) + 180)
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # once: the nodes use both loops
async def test_stalled_listeners_cost_only_their_own_events_soak(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seconds = min(60.0, soak_seconds())
    plan = [("memory", "trio"), ("nng", "asyncio"), ("zmq", "trio"), ("nats", "asyncio")]
    results = await flood_all(plan, seconds, tmp_path)
    text = (
        f"All four side by side, each a flat-out publisher for {seconds:g} s into one node "
        "with a stalled async listener, a 1 s-per-event async listener, a fast sync and a fast "
        f"async listener (queue {QUEUE}). Bound asserted: node RSS < baseline + "
        + ", ".join(f"{mb:g} MB ({t})" for t, mb in RSS_BOUND_MB.items())
        + ". Events NATS read but never dispatched (at and after the close): "
        + ", ".join(f"{r['transport']} {read_not_dispatched(r['final']):,}" for r in results)
        + ".\n\n"
        + table(HEADER, rows(results))
    )
    report = publish_report("Slow consumers", text, results)
    with capsys.disabled():
        print("\n" + report)
    verdict(results)
