"""Faults with real processes (issue 8, item 1): a subscriber killed, a subscriber frozen
with SIGSTOP, the hub killed and restarted; on nng, ZeroMQ and NATS.

Every member is a child process (``fault_support.py``): a publisher P emitting numbered
events at 200 events/s, and three subscribers: A (a witness nothing happens to), K
(SIGKILLed) and S (SIGSTOPped, then SIGCONTinued). The hub (nng ``role=hub``, the ZeroMQ
proxy, or nats-server) has its own process too, so it can be SIGKILLed and restarted on the
same address; members use ``role=node``, so none of them takes over (election is
``tests/test_failover.py``'s subject). One scenario, in phases:

1. K is SIGKILLed and S SIGSTOPped at the same instant; ``stop_seconds`` later S gets SIGCONT.
   The events are large enough for S's queues to overflow meanwhile (the hub's per-member
   queue is made small, or NATS's ``max_pending``), so S must lose events, and count them.
   P must keep its rate (no ``emit()`` blocked long, no problem reported) and A must lose
   nothing and keep receiving; S must resume and catch up.
2. The hub is SIGKILLed and restarted on the same address, ``hub_kills`` times. Each time,
   A and S must hear events emitted after the kill again within RECOVERY_LIMIT (recovery
   time: from the killed hub's death to the arrival of the first event emitted after it;
   the restart of the hub process is included).
3. P stops; the tail must reach A and S. For each, ``stats().lost + dropped`` must equal
   exactly the loss the test observed (P's count minus what arrived), nothing duplicated or
   out of order.
4. (soak only) The tail: the hub is killed, P emits 50 more events, the hub comes back, P
   sends end markers on another topic, then closes. No later event reveals the events lost
   after the last one a subscriber received; P's bye does (it carries the last number of
   each topic, ``nanomitter.core.tail``): once it arrived, every loss must be counted
   exactly, the tail included.

``make test`` runs a short version (2 s SIGSTOP, one hub restart) per transport, ``make
soak`` the full one (10 s SIGSTOP, a restart every few seconds, the tail phase). Figures
are printed (``pytest -s``) and appended to ``/tmp/nanomitter-faults.json``.
"""

from __future__ import annotations

import json
import signal
import time
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from fault_support import Bus, Child, hub_for, member, rate_between

pytestmark = pytest.mark.anyio
TRANSPORTS = ["nng", "zmq", "nats"]
RESULTS = Path("/tmp/nanomitter-faults.json")
RECOVERY_LIMIT = 10.0
"""Seconds from a hub's SIGKILL to the first event emitted after it arriving, at most: the
restart of the hub process (a Python interpreter, on two shared cores) is included."""
BLOCK_LIMIT = 1.5
"""The longest a single ``emit()`` may take while a subscriber is dead or frozen (ZeroMQ's
``send_timeout_ms`` is 1 s; the others never wait for a subscriber)."""
MIN_RATE_SHARE = 0.3
"""P's emit rate while a subscriber is dead or frozen, as a share of its rate before: low,
because P is not alone on two shared cores; a blocked P stays far below it."""
MIN_WITNESS_SHARE = 0.5
"""What A receives while S is frozen, as a share of what P emits meantime (both suffer
alike from a busy machine; a hub that stalls on S's full queue fails this)."""
TAIL = 50


@pytest.fixture
def anyio_backend() -> str:
    """This process only coordinates; the children run on asyncio and trio (BACKENDS)."""
    return "asyncio"


BACKENDS = {
    "nng": ("asyncio", "trio"),
    "zmq": ("trio", "asyncio"),
    "nats": ("asyncio", "asyncio"),  # nats-py: asyncio only
}
"""Per transport, the backends of (P and S, A and K)."""


@dataclass
class Plan:
    stop_seconds: float
    hub_kills: int
    pad: int
    """Bytes of padding per event, so that S's queues overflow while it is frozen."""
    hub_options: str = ""
    nats_config: str = ""
    rate: float = 200.0
    settle: int = 100
    """Events A and S must receive after each fault before the next phase."""
    tail: bool = False


QUICK = {
    # 2 s SIGSTOP at 200 events/s: 400 events of 64 kB (nng, ZeroMQ) or 32 kB (NATS), far
    # more than S's queues hold (the hub's, cut to 128 or 160 events; NATS's max_pending, cut
    # to 2 MiB; plus what the kernel buffers), yet enough for A to ride out a CPU stall of
    # about 0.7 s on a busy machine (its own queue is just as small)
    "nng": Plan(stop_seconds=2, hub_kills=1, pad=64_000, hub_options="buffer=128"),
    "zmq": Plan(stop_seconds=2, hub_kills=1, pad=64_000, hub_options="hub_hwm=160"),
    "nats": Plan(stop_seconds=2, hub_kills=1, pad=32_000, nats_config="max_pending: 2097152\n"),
}


def soak_plan(transport: str, seconds: float) -> Plan:
    """10 s SIGSTOP at 200 x 16 kB events/s (32 MB). The defaults would hold most or all of
    it (nng's hub queue: 1024 events, plus about 5 MB in the kernel; ZeroMQ's: 10 000; NATS's
    max_pending: 64 MiB), so they are lowered to 256 events, 1000 events and 8 MiB. A hub
    restart per 10 s of DURATION, at least 3."""
    options = {"nng": "buffer=256", "zmq": "hub_hwm=1000", "nats": ""}
    return Plan(
        stop_seconds=10,
        hub_kills=max(3, int(seconds / 10)),
        pad=16_000,
        hub_options=options[transport],
        nats_config="max_pending: 8388608\n" if transport == "nats" else "",
        settle=200,
        tail=True,
    )


@dataclass
class Report:
    transport: str
    plan: Plan
    recoveries: list[float] = field(default_factory=list)
    restarts: list[float] = field(default_factory=list)
    stop: dict[str, Any] = field(default_factory=dict)
    accounts: dict[str, Any] = field(default_factory=dict)
    tail: dict[str, Any] = field(default_factory=dict)


async def wait_caught_up(children: list[Child], number: int, what: str) -> list[dict[str, Any]]:
    """Each child's first status line in which it has received tick ``number`` or later."""
    return [
        await child.status(lambda s: s.get("last", 0) >= number, f"{what}: never got {number}")
        for child in children
    ]


async def wait_more(children: list[Child], count: int, what: str) -> None:
    """Return once every child has received ``count`` more ticks than it has now."""
    for child in children:
        target: int = child.latest()["received"] + count

        def enough(status: dict[str, Any], target: int = target) -> bool:
            return bool(status.get("received", 0) >= target)

        await child.status(enough, f"{what}: +{count}")


async def wait_resumed(children: list[Child], key: str, instant: float) -> list[float]:
    """Per child, how long after ``instant`` the first tick emitted after it arrived."""
    for child in children:
        await child.send(cmd="mark", id=key, t=instant)
    delays = []
    for child in children:
        status = await child.status(
            lambda s: key in s.get("resumed", {}), f"heard nothing emitted after {key}"
        )
        delays.append(status["resumed"][key]["arrived"] - instant)
    return delays


def at(child: Child, instant: float, key: str) -> int:
    """``key`` in the child's last status line printed before ``instant``."""
    lines = [s for s in child.statuses() if "t" in s and s["t"] <= instant]
    return int(lines[-1][key]) if lines else 0


def hub_alive(bus: Bus) -> bool:
    hub: Any = bus.hub
    if hasattr(hub, "running"):  # NatsServer
        return bool(hub.running)
    return hub.process is not None and hub.process.poll() is None


def slow_consumers_logged(bus: Bus) -> int:
    """How often nats-server logged cutting a slow consumer (0 for other transports)."""
    path = getattr(bus.hub, "log_path", None)
    if path is None or not path.exists():
        return 0
    return int(path.read_text(errors="replace").count("Slow Consumer"))


def account(status: dict[str, Any], sent: int) -> dict[str, Any]:
    stats = status["stats"]
    return {
        "sent": sent,
        "received": status["received"],
        "observed": sent - status["received"],
        "reported": stats["lost"] + stats["dropped"],
        "lost": stats["lost"],
        "dropped": stats["dropped"],
        "unseen_tail": sent - status["last"],
        "first": status["first"],
        "out_of_order": status["out_of_order"],
        "reordered": stats["reordered"],
        "problems": status["problems"],
    }


@dataclass
class Members:
    p: Child
    a: Child
    k: Child
    s: Child


async def sub_faults(bus: Bus, plan: Plan, members: Members) -> Report:
    """Phase 1: K SIGKILLed and S SIGSTOPped together; P and A must not notice."""
    p, a, k, s = members.p, members.a, members.k, members.s
    report = Report(bus.transport, plan)
    before = p.latest()
    stopped_at = time.monotonic()
    k.signal(signal.SIGKILL)
    s.signal(signal.SIGSTOP)
    try:
        await anyio.sleep(plan.stop_seconds)  # the fault's length, not a synchronisation
    finally:
        s.signal(signal.SIGCONT)
    continued_at = time.monotonic()
    rate, longest_emit = rate_between(p, stopped_at, continued_at)
    rate_before = before["sent"] / max(before["t"] - before["started_at"], 1e-9)
    (catch_up,) = await wait_resumed([s], "sigcont", continued_at)
    await wait_more([a, s], plan.settle, "after SIGCONT")
    sent_during = at(p, continued_at, "sent") - at(p, stopped_at, "sent")
    witness_during = at(a, continued_at, "received") - at(a, stopped_at, "received")
    after = {"A": a.latest(), "S": s.latest(), "P": p.latest()}
    report.stop = {
        "seconds": plan.stop_seconds,
        "rate_before": round(rate_before, 1),
        "rate_during": round(rate, 1),
        "longest_emit_during": round(longest_emit, 4),
        "P_sent_during": sent_during,
        "A_received_during": witness_during,
        "A_longest_silence": round(after["A"]["longest_silence"], 3),
        "S_catch_up_after_sigcont": round(catch_up, 3),
        "S_missing": after["S"]["missing"],
        "S_lost": after["S"]["stats"]["lost"],
        "S_dropped": after["S"]["stats"]["dropped"],
        "S_gaps": after["S"]["gaps"][:5],
        "S_problems": after["S"]["problems"],
        "slow_consumers_logged": slow_consumers_logged(bus),
    }
    figures = json.dumps(report.stop)
    assert rate >= MIN_RATE_SHARE * rate_before, figures
    assert longest_emit < BLOCK_LIMIT, figures
    assert witness_during >= MIN_WITNESS_SHARE * sent_during, figures
    assert after["P"]["problems"] == {}, after["P"]
    assert after["P"]["stats"]["dropped"] == 0, after["P"]
    witness = after["A"]
    seen = json.dumps({"A": witness, **report.stop})
    assert (witness["first"], witness["missing"], witness["out_of_order"]) == (1, 0, 0), seen
    assert witness["received"] == witness["last"], seen
    assert (witness["stats"]["lost"], witness["stats"]["dropped"]) == (0, 0), seen
    assert k.process.returncode == -signal.SIGKILL
    assert hub_alive(bus)
    # S overflowed (the plan makes sure) and counted what it missed (gaps and lost can only
    # differ while a gap is still open: S has received 100 events since)
    assert after["S"]["missing"] > 0, figures
    assert after["S"]["stats"]["lost"] + after["S"]["stats"]["dropped"] == after["S"]["missing"], (
        figures
    )
    if bus.transport == "nats":  # the server cut S off as a slow consumer; S reconnected
        assert report.stop["slow_consumers_logged"] >= 1, figures
        assert after["S"]["problems"].get("reconnected", 0) >= 1, figures
    return report


async def hub_restarts(bus: Bus, plan: Plan, report: Report, a: Child, s: Child) -> None:
    """Phase 2: SIGKILL the hub and start it again on the same address, ``hub_kills`` times."""
    for kill in range(plan.hub_kills):
        key = f"hub{kill}"
        killed_at = await bus.kill_hub()
        ready_at = await bus.start_hub()
        delays = await wait_resumed([a, s], key, killed_at)
        report.restarts.append(round(ready_at - killed_at, 3))
        report.recoveries.append(round(max(delays), 3))
        await wait_more([a, s], plan.settle, f"after hub restart {kill}")
    assert max(report.recoveries) < RECOVERY_LIMIT, report.recoveries


async def counted_tail(bus: Bus, report: Report, p: Child, a: Child, s: Child) -> None:
    """Phase 4: events emitted while the hub is down, with none after them on their topic;
    P's bye, once the hub is back, tells how far it went."""
    sent = p.latest()["sent"] + TAIL
    await bus.kill_hub()
    await p.send(cmd="more", count=TAIL)
    await p.status(lambda st: st.get("idle", False) and st["sent"] == sent, "no tail")
    await bus.start_hub()
    await p.send(cmd="end")
    for child in (a, s):  # the path from P is back
        await child.status(lambda st: st.get("ended", False), "never heard the end")
    await p.send(cmd="close")
    await p.status(lambda st: st.get("closed", False), "did not close")

    def tail_counted(status: dict[str, Any]) -> bool:
        if "stats" not in status:  # not a status line (ready, closed ...)
            return False
        counted = account(status, sent)
        return bool(counted["reported"] >= counted["observed"])

    for child in (a, s):
        status = await child.status(tail_counted, "never counted the tail (P's bye)")
        report.tail[child.name] = account(status, sent)


def record(report: Report) -> None:
    line = json.dumps(asdict(report))
    print(f"\n{report.transport} faults: {line}")
    with RESULTS.open("a") as results:
        results.write(line + "\n")


async def run_faults(bus: Bus, plan: Plan) -> Report:
    first, second = BACKENDS[bus.transport]
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(member("sub", bus.url, "A", second))
        k = await stack.enter_async_context(member("sub", bus.url, "K", second))
        s = await stack.enter_async_context(member("sub", bus.url, "S", first))
        p = await stack.enter_async_context(
            member("pub", bus.url, "P", first, rate=plan.rate, pad=plan.pad)
        )
        for child in (a, k, s):
            await child.status(lambda st: st.get("probed", False), "never heard P's probes")
        await p.send(cmd="start")
        for child in (a, k, s):
            await child.status(lambda st: st.get("received", 0) >= 50, "did not get 50 events")

        report = await sub_faults(bus, plan, Members(p, a, k, s))
        await hub_restarts(bus, plan, report, a, s)

        # phase 3: P stops, the tail arrives, every loss is counted
        await p.send(cmd="stop")
        sent = (await p.status(lambda st: st.get("idle", False), "did not stop"))["sent"]
        caught_up = await wait_caught_up([a, s], sent, "the tail")
        for child, status in zip((a, s), caught_up, strict=True):
            report.accounts[child.name] = account(status, sent)
        if plan.tail:
            await counted_tail(bus, report, p, a, s)  # P closes there
        still_open = (a, s) if plan.tail else (a, s, p)
        for child in still_open:
            await child.send(cmd="close")
        for child in still_open:
            await child.status(lambda st: st.get("closed", False), "did not close")

    record(report)
    for name, counted in report.accounts.items():
        assert (counted["first"], counted["out_of_order"], counted["reordered"]) == (1, 0, 0), (
            name,
            counted,
        )
        assert counted["unseen_tail"] == 0, (name, counted)
        assert counted["reported"] == counted["observed"], (name, counted)
    for name, counted in report.tail.items():
        # the tail too (unseen_tail: how much of it only P's bye revealed)
        assert counted["reported"] == counted["observed"], (name, counted)
    return report


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.timeout(120)
async def test_killed_and_frozen_subscribers_and_a_restarted_hub(
    anyio_backend: str, transport: str, tmp_path: Path
) -> None:
    plan = QUICK[transport]
    async with hub_for(
        transport, tmp_path, hub_options=plan.hub_options, nats_config=plan.nats_config
    ) as bus:
        await run_faults(bus, plan)


@pytest.mark.soak
@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.timeout(600)
async def test_soak_faults(
    anyio_backend: str, transport: str, tmp_path: Path, soak_duration: float
) -> None:
    plan = soak_plan(transport, soak_duration)
    async with hub_for(
        transport, tmp_path, hub_options=plan.hub_options, nats_config=plan.nats_config
    ) as bus:
        await run_faults(bus, plan)
