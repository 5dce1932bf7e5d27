"""The soak (issue 8, item 6): every transport at half its measured maximum rate, fan-out 4.

Per transport: one publisher process and four subscriber processes (nng and ZeroMQ behind a
hub process, NATS through a nats-server; ``memory://`` is in-process, so there the publisher
and the four subscribers are emitters of one process). Subscribers alternate asyncio and
trio (NATS: asyncio). Each run:

1. measures the maximum rate: a 2 s flat-out burst, one event per event-loop turn as the
   paced soak emits them; the rate is what the slowest subscriber received per second (from
   the burst's first emit to its last arrival). A burst of 64 events per turn would let
   ZeroMQ coalesce 64 events per message, which a paced stream never does: "half" of that
   maximum kept ZeroMQ's subscribers queueing (p99 0.3-0.8 s) and, on a busy machine, lost
   0.2% when a stall outlasted the queues (10 000 messages, ~80 ms at 120k events/s);
2. soaks at half that rate for ``soak_seconds()`` (``make soak DURATION=N``); the resident
   memory of every process (hub and nats-server included) is sampled every second;
3. pauses 0.5 s and emits end markers on the same topic: a subscriber's ``stats().lost``
   then counts the soak's tail too (the last events, which no later soak event follows),
   and the marker says what was sent, so the subscriber counts what arrived.

Asserted per subscriber: ``stats().lost`` equals the gaps it observed in the publisher's own
numbering (tail included); nothing dropped, duplicated, reordered or undecodable; the soak
lost < 0.1% of what was sent; no problem reported during the soak. Per process: RSS grew
< 30 MB after the warm-up (min(10 s, a quarter of the soak)); nats-server, not ours, is
reported only. The figures (rates, counts, loss, tail loss, latency p50/p99/max from
``time.time_ns()`` stamps, RSS) go to the report, ``$NANOMITTER_SOAK_REPORT`` (default
/tmp/nanomitter-soak.md, with a .json twin), and to the terminal.

The transports run one after another, each alone on the machine, about ``soak_seconds() + 5``
seconds each (4 min 20 s at DURATION=60). Measured on the 2-core VM: run side by side, the
four bursts measure a fraction of each transport's maximum (memory 135k -> 11k events/s,
nng 26k -> 8.6k, ZeroMQ 171k -> 45k, NATS 30k -> 13k), so "half the maximum" would soak
each at 3-12x less than it sustains alone. ``make test`` runs a smoke version: nng,
fan-out 2, 1 s burst, 3 s at a quarter of the rate.
"""

from __future__ import annotations

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
    report_path,
    soak_seconds,
    table,
)

pytestmark = pytest.mark.anyio

TRANSPORTS = ("memory", "nng", "zmq", "nats")
FANOUT = 4
BURST_SECONDS = 2.0
LOSS_LIMIT = 0.001
"""At half the measured maximum rate a subscriber must lose less than 0.1%."""
RSS_GROWTH_MB = 30.0
"""No process may grow more than this after the warm-up."""
SMOKE_FRACTION = 0.25
SMOKE_LOSS_LIMIT = 0.5
"""The smoke tests the machinery (burst, pacing, markers, accounting, RSS, report), on a
machine ``make test`` shares with other work: the 0.1% limit is the soak's, not the smoke's
(a 3 s nng run on two busy cores lost 8% at a quarter rate while other tests flooded)."""
SMOKE_PACE_LIMIT = 3.0
EXPECTED_PROBLEMS = {"burst:dropped", "fence:dropped"}
"""What a subscriber may report: overflow while the burst overruns it. Nothing in the soak."""


def backends_for(transport: str, count: int) -> list[str]:
    if transport == "nats":
        return ["asyncio"] * count
    return [("asyncio", "trio")[index % 2] for index in range(count)]


async def soak_run(
    transport: str,
    *,
    subscribers: int,
    burst: float,
    seconds: float,
    directory: Path,
    fraction: float = 0.5,
    memory_backend: str = "asyncio",
) -> dict[str, Any]:
    """One transport: burst, soak at ``fraction`` of the burst's rate, end markers."""
    subs = [f"sub{index}" for index in range(subscribers)]
    backends = backends_for(transport, subscribers)
    sampler = RssSampler()
    async with AsyncExitStack() as stack:
        fleet = Fleet(stack)
        if transport == "memory":
            child = await fleet.role(
                "memory", "memory", memory_backend, str(subscribers), speaks_for=["pub", *subs]
            )
            sampler.watch("memory", child.pid)
        else:
            url, hub_pid = await stack.enter_async_context(bus_for(transport, fleet, directory))
            sampler.watch("hub", hub_pid)
            for who, backend in zip(subs, backends, strict=True):
                sampler.watch(who, (await fleet.role(who, "subscriber", url, backend, who)).pid)
            for who in subs:
                await fleet.expect(who, "ready")
            sampler.watch("pub", (await fleet.role("pub", "publisher", url, "asyncio")).pid)
        await fleet.expect("pub", "ready")
        for who in subs:
            await fleet.expect(who, "primed")

        async with anyio.create_task_group() as tg:
            tg.start_soon(sampler.run)
            await fleet.send("pub", f"burst {burst} 1")  # one event per turn, as paced
            pub_burst = await fleet.expect("pub", "burst", timeout=burst + 60)
            sub_bursts = {who: await fleet.expect(who, "burst", timeout=60) for who in subs}
            rates = {
                who: b["got"] / max(1e-9, (b["last_ns"] - pub_burst["start_ns"]) / 1e9)
                for who, b in sub_bursts.items()
            }
            max_rate = min(rates.values())
            rate = max(100.0, max_rate * fraction)

            soak_start = time.monotonic()  # the sampler's clock
            await fleet.send("pub", f"soak {rate:.0f} {seconds}")
            pub_soak = await fleet.expect("pub", "soak", timeout=2 * seconds + 60)
            soak_end = time.monotonic()
            finals = {who: await fleet.expect(who, "final", timeout=60) for who in subs}
            sampler.sample()
            tg.cancel_scope.cancel()

        for who in ("pub", *subs):
            await fleet.send(who, "quit")
        closed = {who: await fleet.expect(who, "closed", timeout=60) for who in ("pub", *subs)}

    warm = soak_start + min(10.0, seconds / 4)
    rss = {name: sampler.summary(name, soak_start, warm, soak_end) for name in sampler.pids}
    return {
        "transport": transport,
        "subscribers": subscribers,
        "backends": backends if transport != "memory" else [memory_backend] * subscribers,
        "burst": {"pub": pub_burst, "subs": sub_bursts, "rates": rates},
        "max_rate": max_rate,
        "rate": rate,
        "fraction": fraction,
        "seconds": seconds,
        "soak_wall": soak_end - soak_start,
        "pub": pub_soak,
        "finals": finals,
        "closed": closed,
        "rss": rss,
        "rss_series": {
            name: [round(r / MB, 1) for t, r in points if soak_start <= t <= soak_end + 1.5]
            for name, points in sampler.samples.items()
        },
    }


def per_subscriber(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Loss and latency figures of each subscriber."""
    pub = run["pub"]
    out = {}
    for who, final in run["finals"].items():
        stats = final["stats"]
        missing = pub["sent"] - final["soak_got"]
        out[who] = {
            "got": final["soak_got"],
            "missing": missing,
            "loss": missing / pub["sent"],
            "tail_lost": pub["last"] - final["soak_last"],
            "lost": stats["lost"],
            "observed": final["observed"],
            "soak_reported": stats["lost"] - run["burst"]["subs"][who]["stats"]["lost"],
            "dropped": stats["dropped"],
            "p50_us": final["lat_p50"] / 1000,
            "p99_us": final["lat_p99"] / 1000,
            "max_us": final["lat_max"] / 1000,
        }
    return out


def check(
    run: dict[str, Any], loss_limit: float = LOSS_LIMIT, pace_limit: float = 1.5
) -> list[str]:
    failures: list[str] = []

    def expect(ok: bool, text: str) -> None:
        if not ok:
            failures.append(f"{run['transport']}: {text}")

    pub = run["pub"]
    paced = (pub["end_ns"] - pub["start_ns"]) / 1e9
    expect(
        paced < pace_limit * run["seconds"],
        f"the publisher needed {paced:.1f} s for {run['seconds']:g} s of events at "
        f"{run['rate']:,.0f}/s: the machine could not offer the rate",
    )
    for who, final in run["finals"].items():
        stats = final["stats"]
        expect(final["sent"] == pub["sent"], f"{who}: the end marker says {final['sent']} sent")
        expect(
            stats["lost"] == final["observed"],
            f"{who}: stats().lost {stats['lost']} != {final['observed']} gaps observed",
        )
        expect(
            stats["received"] == final["got"],
            f"{who}: received {stats['received']} != {final['got']} events its listener got",
        )
        for name in ("dropped", "reordered", "decode_errors", "invalid", "listener_errors"):
            expect(stats[name] == 0, f"{who}: {name} = {stats[name]}")
        expect(final["backwards"] == 0, f"{who}: {final['backwards']} events out of order")
        expect(final["soak_got"] > 0, f"{who}: no soak event arrived")
        missing = pub["sent"] - final["soak_got"]
        expect(
            missing < loss_limit * pub["sent"],
            f"{who}: lost {missing} of {pub['sent']} ({missing / pub['sent']:.3%}) at "
            f"{run['fraction']:g} of the maximum rate (limit {loss_limit:.1%})",
        )
        unexpected = {k: n for k, n in final["problems"].items() if k not in EXPECTED_PROBLEMS}
        expect(not unexpected, f"{who}: problems {unexpected}: {final['problem_texts']}")
    for who, closed in run["closed"].items():
        unexpected = {k: n for k, n in closed["problems"].items() if k not in EXPECTED_PROBLEMS}
        expect(not unexpected, f"{who}: problems by the close {unexpected}")
    for name, rss in run["rss"].items():
        if name == "hub" and run["transport"] == "nats":
            continue  # nats-server is not nanomitter's: reported, not asserted
        expect(rss["n"] >= 2, f"{name}: {rss['n']} RSS samples")
        expect(
            rss["growth"] < RSS_GROWTH_MB,
            f"{name}: RSS grew {rss['growth']:.1f} MB after the warm-up "
            f"({run['rss_series'].get(name)})",
        )
    return failures


HEADER = [
    "transport",
    "max rate (burst)",
    "soak rate",
    "soak",
    "sent",
    "received per subscriber",
    "loss (worst)",
    "lost: stats = gaps seen",
    "soak loss: stats / missing",
    "tail lost",
    "latency p50 / p99 / max",
    "RSS MB min-max, last (growth after warm-up): publisher / subscribers / hub",
]


def rows(runs: list[dict[str, Any]]) -> list[list[object]]:
    out: list[list[object]] = []
    for run in runs:
        subs = per_subscriber(run)
        got = [s["got"] for s in subs.values()]
        worst = max(subs.values(), key=lambda s: s["loss"])
        p50 = sorted(s["p50_us"] for s in subs.values())[len(subs) // 2]
        p99 = max(s["p99_us"] for s in subs.values())
        top = max(s["max_us"] for s in subs.values())
        rss = run["rss"]

        def mem(names: list[str], rss: dict[str, dict[str, float]] = rss) -> str:
            names = [n for n in names if n in rss]
            if not names:
                return "—"
            low = min(rss[n]["min"] for n in names)
            high = max(rss[n]["max"] for n in names)
            last = max(rss[n]["last"] for n in names)
            growth = max(rss[n]["growth"] for n in names)
            return f"{low:.0f}-{high:.0f}, last {last:.0f} (+{growth:.1f})"

        sub_names = [n for n in rss if n.startswith("sub")]
        memory = (
            f"one process: {mem(['memory'])}"
            if "memory" in rss
            else f"{mem(['pub'])} / {mem(sub_names)} / {mem(['hub'])}"
        )
        out.append(
            [
                run["transport"],
                f"{run['max_rate']:,.0f}/s",
                f"{run['rate']:,.0f}/s",
                f"{run['seconds']:g} s",
                f"{run['pub']['sent']:,}",
                f"{min(got):,}-{max(got):,}" if min(got) != max(got) else f"{got[0]:,}",
                f"{worst['missing']:,} ({worst['loss']:.3%})",
                "yes" if all(s["lost"] == s["observed"] for s in subs.values()) else "NO",
                ", ".join(f"{s['soak_reported']}/{s['missing']}" for s in subs.values()),
                ", ".join(str(s["tail_lost"]) for s in subs.values()),
                f"{p50:,.0f} / {p99:,.0f} / {top:,.0f} µs",
                memory,
            ]
        )
    return out


def markdown(runs: list[dict[str, Any]]) -> str:
    notes = [
        f"One publisher, {runs[0]['subscribers']} subscribers per transport, one transport at "
        f"a time, at {runs[0]['fraction']:g} of the maximum rate; payload "
        "`{i, p, ts}` (about 60 B on the wire). Max rate: a "
        f"{BURST_SECONDS:g} s flat-out burst, the slowest subscriber's received/s. Loss: "
        "sent minus received per subscriber (worst shown); `lost: stats = gaps seen`: "
        "stats().lost equals the gaps in the publisher's numbering, tail included (end "
        "markers after a 0.5 s pause). Soak loss: lost counted during the soak / soak events "
        "missing (equal unless a fence or marker was lost too). Tail lost: soak events after "
        "the last one each subscriber got. Latency: emit to listener, time.time_ns() on one "
        "machine; p50 is the median subscriber's, p99 and max the worst subscriber's. RSS: "
        "min-max over the soak, growth = highest sample after the warm-up minus the sample at "
        "its end (nats-server: reported, not asserted).",
    ]
    for run in runs:
        subs = per_subscriber(run)
        pub = run["pub"]
        notes.append(
            f"- {run['transport']}: subscribers on {', '.join(run['backends'])}; publisher "
            f"paced {pub['sent'] / max(1e-9, (pub['end_ns'] - pub['start_ns']) / 1e9):,.0f}/s "
            f"(at most {pub['behind_max'] * 1000:.0f} ms behind schedule); per subscriber "
            "got/lost/p99 µs: "
            + "; ".join(
                f"{who} {s['got']:,}/{s['missing']:,}/{s['p99_us']:,.0f}" for who, s in subs.items()
            )
        )
    return "\n".join(notes) + "\n\n" + table(HEADER, rows(runs))


@pytest.mark.timeout(90)
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the children use both loops
async def test_soak_smoke(tmp_path: Path) -> None:
    """The soak's machinery, briefly: nng, fan-out 2, 1 s burst, 3 s at a quarter of the rate
    (``make test`` shares the machine with other work: a gentler rate, a looser limit)."""
    run = await soak_run(
        "nng", subscribers=2, burst=1.0, seconds=3.0, directory=tmp_path, fraction=SMOKE_FRACTION
    )
    text = markdown([run])
    print(text)
    publish_report("Soak smoke", text, run, path=tmp_path / "soak.md")
    assert (tmp_path / "soak.json").is_file()
    failures = check(run, loss_limit=SMOKE_LOSS_LIMIT, pace_limit=SMOKE_PACE_LIMIT)
    assert not failures, "\n".join(failures)


@pytest.mark.soak
@pytest.mark.timeout(int(soak_seconds()) * 3 + 240)
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_soak(transport: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seconds = soak_seconds()
    run = await soak_run(
        transport,
        subscribers=FANOUT,
        burst=BURST_SECONDS,
        seconds=seconds,
        directory=tmp_path,
    )
    _RUNS[transport] = run
    report = publish_report(
        "Soak", markdown([_RUNS[t] for t in TRANSPORTS if t in _RUNS]), dict(_RUNS)
    )
    with capsys.disabled():  # make soak's output shows the figures
        if transport == TRANSPORTS[-1]:
            print(f"\n{report}\n(written to {report_path()})", flush=True)
        else:
            print(f"\n{markdown([run])}\n", flush=True)
    failures = check(run)
    assert not failures, "\n".join(failures)


_RUNS: dict[str, dict[str, Any]] = {}
