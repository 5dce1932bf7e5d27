"""What ``make bench`` runs: every benchmark side by side, one table, the docs page and chart.

Each benchmark script runs in its own process with ``--results FILE`` (its figures as JSON);
then this prints one table (a row per transport, payload size and subscriber count: raw
beside nanomitter) and writes ``benchmarks.md`` and ``benchmarks.png`` (``benchmarks/chart.py``)
into ``--out-dir`` (default ``docs/``). An existing ``benchmarks.md`` keeps everything outside
the ``<!-- suite:begin -->`` / ``<!-- suite:end -->`` markers: the hand-written analysis.

The profile fits 10 minutes on a 2-core machine, so it is narrower than each script alone:
``memory.py`` at reduced counts, without trio; for nng, ZeroMQ and NATS a payload sweep
(64 B, 1 KiB, 64 KiB, one subscriber) and a fan-out (4 and 16 subscribers at 64 B; 1 is the
sweep's 64 B row), flat out (median of 3, 64 KiB runs capped in bytes, 16 subscribers with
fewer events), then latency at a modest paced rate; no sustainable-rate search; and
``request_bench.py`` (request/reply round trips, every transport, 5,000 sequential requests
per contender, median of 3).

    python benchmarks/suite.py                                  # about 3 minutes: docs/benchmarks.*
    python benchmarks/suite.py --quick --out-dir /tmp/bench     # smoke run (about a minute)
    python benchmarks/suite.py --results-dir runs               # keep every script's JSON
    python benchmarks/suite.py --render-only --results-dir runs # redraw from kept JSON

Exit status: 0; 1 when a script reports a problem (a loss-accounting MISMATCH, events lost
in process); 2 when a script produced no results (its output is printed).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import chart
import memory
from common import fmt_rate, fmt_us, grid

from nanomitter.machine import cpu_model, describe

HERE = Path(__file__).resolve().parent
DOCS = HERE.parent / "docs"
BEGIN, END = "<!-- suite:begin -->", "<!-- suite:end -->"
TRANSPORTS = {"nng": "nng.py", "zmq": "zmq_bench.py", "nats": "nats_bench.py"}
SIZES = (64, 1024, 65536)
FAN_SIZE = 64
LIBRARIES = ("nanomitter", "pynng", "pyzmq", "nats-py", "msgspec", "anyio", "pyee", "broadcaster")


# ---------------------------------------------------------------------------- the profile


@dataclass(frozen=True)
class Profile:
    """How much of each benchmark the suite runs."""

    memory: tuple[str, ...]  # memory.py's options
    count: int  # flat-out events per run: the sweep (64 KiB: capped by max_bytes)
    max_bytes: int
    fan_counts: dict[int, int]  # subscribers -> flat-out events per run
    repeat: int  # flat-out runs (the median is reported)
    latency_rate: float
    latency_seconds: float
    timeout: float  # seconds one script may take
    requests: tuple[str, ...] = ()  # request_bench.py's options


FULL = Profile(
    memory=("--count", "20000", "--repeat", "5", "--no-trio"),
    count=100_000,
    max_bytes=256 * 2**20,
    fan_counts={4: 50_000, 16: 10_000},
    repeat=3,
    latency_rate=1000,
    latency_seconds=2,
    timeout=300,
    requests=("--count", "5000", "--repeats", "3"),
)
QUICK = Profile(
    memory=("--quick", "--no-trio"),
    count=2000,
    max_bytes=16 * 2**20,
    fan_counts={4: 1000, 16: 1000},
    repeat=1,
    latency_rate=1000,
    latency_seconds=0.2,
    timeout=100,
    requests=("--quick",),
)


@dataclass(frozen=True)
class Job:
    """One run of one script; its figures go to ``<name>.json``."""

    name: str
    script: str
    args: tuple[str, ...]


def jobs(profile: Profile) -> list[Job]:
    out = [Job("memory", "memory.py", profile.memory)]
    shared = (
        "--flat-only",
        *("--repeat", str(profile.repeat)),
        *("--latency-rate", f"{profile.latency_rate:g}"),
        *("--latency-seconds", f"{profile.latency_seconds:g}"),
    )
    sizes = ",".join(map(str, SIZES))
    for transport, script in TRANSPORTS.items():
        sweep = ("--subs", "1", "--sizes", sizes, "--max-bytes", str(profile.max_bytes))
        out.append(
            Job(f"{transport}-sweep", script, (*shared, *sweep, "--count", str(profile.count)))
        )
        for subs, count in profile.fan_counts.items():
            fan = ("--subs", str(subs), "--sizes", str(FAN_SIZE), "--count", str(count))
            out.append(Job(f"{transport}-fan{subs}", script, (*shared, *fan)))
    out.append(Job("requests", "request_bench.py", profile.requests))
    return out


# ---------------------------------------------------------------------------- running


def run(job: Job, results: Path, timeout: float) -> int:
    """Run ``job`` (its progress on stderr); print its report only if it failed."""
    path = results / f"{job.name}.json"
    path.unlink(missing_ok=True)
    command = [sys.executable, str(HERE / job.script), *job.args, "--results", str(path)]
    print(f"== {job.name}: {job.script} {' '.join(job.args)}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        out = stop(process, interrupt=True) + f"\n{job.name}: timed out after {timeout:g} s"
    except BaseException:  # Ctrl-C: the script got its own SIGINT
        stop(process, interrupt=False)
        raise
    code = process.returncode if path.exists() else (process.returncode or 2)
    print(f"   {job.name}: exit {code}, {time.perf_counter() - started:.0f} s", file=sys.stderr)
    if code:
        print(out, file=sys.stderr)
    return code


def stop(process: subprocess.Popen[str], interrupt: bool) -> str:
    """Stop a script as Ctrl-C does (it stops and reaps its children), or kill it after 15 s;
    return what it printed."""
    if interrupt:
        process.send_signal(signal.SIGINT)
    try:
        out, _ = process.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
    return out or ""


# ---------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Figures:
    """One contender's cell, as ``common.cell_record`` wrote it."""

    contender: str
    subs: int
    size: int
    count: int
    runs: list[float]
    delivered: float
    offered: float
    loss: float
    sustainable: float | None
    latency_rate: float | None
    latency_count: int | None
    p50_us: float | None
    p99_us: float | None
    cpu_us: float | None


@dataclass(frozen=True)
class Pair:
    """Raw and nanomitter, same transport, payload size and subscriber count."""

    transport: str
    raw_name: str
    raw: Figures
    nano: Figures

    @property
    def ratio(self) -> float:
        return self.nano.delivered / self.raw.delivered if self.raw.delivered else 0.0


@dataclass
class Results:
    """Everything the scripts wrote, by job name."""

    pairs: dict[str, list[Pair]] = field(default_factory=dict)
    environment: dict[str, list[str]] = field(default_factory=dict)
    lines: dict[str, list[str]] = field(default_factory=dict)
    accounting: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    memory: list[memory.Line] = field(default_factory=list)
    memory_count: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def pair(self, job: str, size: int, subs: int) -> Pair | None:
        return next(
            (p for p in self.pairs.get(job, []) if p.nano.size == size and p.nano.subs == subs),
            None,
        )

    def sweep(self) -> Iterator[Pair]:
        for transport in TRANSPORTS:
            for size in SIZES:
                found = self.pair(f"{transport}-sweep", size, 1)
                if found:
                    yield found

    def fanout(self, counts: Sequence[int]) -> Iterator[Pair]:
        for transport in TRANSPORTS:
            for subs in (1, *counts):
                job = f"{transport}-sweep" if subs == 1 else f"{transport}-fan{subs}"
                found = self.pair(job, FAN_SIZE, subs)
                if found:
                    yield found


def load(results: Path, names: Sequence[str]) -> Results:
    out = Results()
    for name in names:
        path = results / f"{name}.json"
        try:
            record: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            out.missing.append(name)
            continue
        out.environment[name] = record["environment"]
        if name == "requests":
            out.requests = record["results"]
            continue
        if name == "memory":
            out.memory = [memory.Line(**line) for line in record["lines"]]
            out.memory_count = record["count"]
            out.lines[name] = record["goals"]
            continue
        out.lines[name] = record["lines"]
        out.accounting[name] = record["accounting"]
        cells = [Figures(**cell) for cell in record["cells"]]
        transport = name.split("-")[0]
        out.pairs[name] = [
            Pair(transport, record["raw"], raw, nano)
            for raw in cells
            if raw.contender == "raw"
            for nano in cells
            if nano.contender == "nanomitter" and (nano.size, nano.subs) == (raw.size, raw.subs)
        ]
    return out


# ---------------------------------------------------------------------------- the table


def _latency(pair: Pair, quantile: str) -> str:
    def one(figures: Figures) -> str:
        value = figures.p50_us if quantile == "p50" else figures.p99_us
        return "-" if value is None else fmt_us(value)

    return f"{one(pair.raw)} / {one(pair.nano)}"


HEADER = (
    "transport",
    "payload",
    "subs",
    "events",
    "raw",
    "raw/s",
    "nanomitter/s",
    "ratio",
    "loss raw / nano",
    "p50 raw / nano",
    "p99 raw / nano",
)


def pair_row(pair: Pair) -> list[str]:
    return [
        pair.transport,
        chart.size_label(pair.nano.size),
        str(pair.nano.subs),
        f"{pair.nano.count:,}",
        pair.raw_name,
        fmt_rate(pair.raw.delivered),
        fmt_rate(pair.nano.delivered),
        f"{pair.ratio:.2f}x",
        f"{pair.raw.loss:.1%} / {pair.nano.loss:.1%}",
        _latency(pair, "p50"),
        _latency(pair, "p99"),
    ]


def memory_rows(results: Results) -> list[list[str]]:
    """Per scenario and payload: the baseline against nanomitter's first like-for-like
    (``codec=none``, asyncio) row; memory.py's own table has every variant."""
    rows = []
    for base in (ln for ln in results.memory if ln.ratio is None):
        nano = next(
            ln
            for ln in results.memory
            if ln.scenario == base.scenario and ln.size == base.size and ln.goal is not None
        )
        lost = f"{base.lost / results.memory_count:.1%} / {nano.lost / results.memory_count:.1%}"
        rows.append(
            [
                f"memory {base.scenario}",
                chart.size_label(base.size),
                "1",
                f"{results.memory_count:,}",
                base.name.split()[0],
                fmt_rate(base.rate),
                fmt_rate(nano.rate),
                f"{nano.ratio or 0.0:.2f}x",
                lost,
                "-",
                "-",
            ]
        )
    return rows


REQUEST_HEADER = (
    "transport",
    "raw",
    "p50 raw / nano",
    "p99 raw / nano",
    "requests/s raw / nano",
    "CPU µs/request raw / nano",
    "nanomitter p50",
)


def _both(raw: dict[str, Any], nano: dict[str, Any], key: str) -> str:
    return " / ".join("-" if f[key] is None else f"{f[key]:,.0f}" for f in (raw, nano))


def request_rows(results: Results) -> list[list[str]]:
    """request_bench.py's figures: per transport, its raw contender beside nanomitter."""
    rows = []
    for transport in dict.fromkeys(r["transport"] for r in results.requests):
        mine = [r for r in results.requests if r["transport"] == transport]
        raw = next((r for r in mine if r["kind"] == "raw"), None)
        nano = next((r for r in mine if r["kind"] == "nano"), None)
        if raw is None or nano is None:
            continue

        ratio = nano["p50_us"] / raw["p50_us"] if raw["p50_us"] else 0.0
        rows.append(
            [
                transport,
                raw["contender"],
                _both(raw, nano, "p50_us") + " µs",
                _both(raw, nano, "p99_us") + " µs",
                _both(raw, nano, "requests_per_s"),
                _both(raw, nano, "cpu_us_per_request"),
                f"{ratio:.2f}x slower" if ratio >= 1 else f"{1 / max(ratio, 1e-9):.2f}x faster",
            ]
        )
    return rows


def summary(results: Results, counts: Sequence[int], markdown: bool) -> str:
    """Every row: memory, then each transport's sweep and its fan-out beyond 1 subscriber."""
    groups = [memory_rows(results)]
    for transport in TRANSPORTS:
        sweep = [pair_row(p) for p in results.sweep() if p.transport == transport]
        fan = [pair_row(p) for p in results.fanout(counts) if p.transport == transport]
        groups.append(sweep + [row for row in fan if row[2] != "1"])
    return grid(HEADER, [g for g in groups if g], markdown)


def verdicts(results: Results) -> list[str]:
    """Every script's loss accounting and goal lines, each with its job's name."""
    return [f"{name}: {text}" for name, lines in results.lines.items() for text in lines]


def headline(results: Results) -> str:
    """Loss accounting over the whole suite, in one sentence."""
    figures = [f for by_contender in results.accounting.values() for f in by_contender.values()]
    windows = sum(f["windows"] for f in figures)
    mismatched = sum(f["mismatched"] for f in figures)
    verdict = "equals" if not mismatched else f"DIFFERS in {mismatched} of"
    return (
        f"Loss accounting: the loss each library reported (nanomitter: `stats().lost`; raw: "
        f"gaps in its sequence numbers) {verdict} the loss observed in all {windows:,} trial "
        "windows (trials x subscribers, warm-ups included)."
    )


def problems(results: Results) -> list[str]:
    """Loss-accounting mismatches, lost events and scripts without results."""
    found = [
        f"{name}: loss accounting, {contender}: MISMATCH in {figures['mismatched']} windows"
        for name, by_contender in results.accounting.items()
        for contender, figures in by_contender.items()
        if figures["mismatched"]
    ]
    found += [
        f"memory: {ln.name} ({ln.codec}, {ln.size} B) lost {ln.lost}"
        for ln in results.memory
        if ln.lost
    ]
    found += [f"{name}: no results (the script failed)" for name in results.missing]
    return found


# ---------------------------------------------------------------------------- the docs


def _bullets(lines: Sequence[str]) -> str:
    return "\n".join(f"- {text}" for text in lines)


def section(results: Results, meta: dict[str, Any], counts: Sequence[int]) -> str:
    """The generated part of benchmarks.md, markers included."""
    load_before, load_after = meta["load"]
    busy = (
        " (the machine was busy with other work: read the ratios, not the absolute figures)"
        if load_before > (os.cpu_count() or 1) / 2
        else ""
    )
    details = [f"memory: {text}" for text in results.environment.get("memory", [])[:1]]
    details += [f"requests: {text}" for text in results.environment.get("requests", [])[1:3]]
    details += [
        f"{transport}: {text}"
        for transport in TRANSPORTS
        for text in results.environment.get(f"{transport}-sweep", [])[1:]
    ]
    found = problems(results)
    parts = [
        BEGIN,
        "<!-- Written by `make bench` (benchmarks/suite.py); edits between these markers are "
        "lost. -->",
        "",
        "## Summary (`make bench`)",
        "",
        f"Run {meta['date']}{' (--quick)' if meta['quick'] else ''}, wall time "
        f"{meta['seconds']:.0f} s, 1-minute load average {load_before:.2f} at the start{busy} "
        f"and {load_after:.2f} at the end (this run's own processes included). "
        f"{describe(LIBRARIES)}.",
        "",
        *([f"**Problems in this run:** {'; '.join(found)}", ""] if found else []),
        "![nanomitter against raw pynng, pyzmq and nats-py: payload sweep and fan-out]"
        "(benchmarks.png)",
        "",
        "How: a profile that fits 10 minutes on this machine, narrower than each script alone.",
        "",
        "- Transports: one hub, one publisher and N subscribers, each its own process; the raw "
        "library and nanomitter do the same job, their trials alternating. Flat out: the "
        "publisher emits as fast as it can; events/s = events a subscriber got / (its last "
        "receive - the first send), the median of the runs; loss = the share of events a "
        "subscriber never got (how each library drops when overrun: the sections below). "
        "`events` = events per flat-out run: fewer at 64 KiB (a byte cap) and with 16 "
        "subscribers (16 processes share the cores, so those figures are the noisiest).",
        "- Latency p50 / p99: emit to listener call, at a paced rate (`--latency-rate`, below), "
        "pooled over subscribers.",
        "- Not measured here: the sustainable rate (the highest paced rate with < 0.1% loss); "
        "its search takes most of a full run. The sections below have it.",
        "",
        "### Payload sweep (1 subscriber)",
        "",
        grid(HEADER, [[pair_row(p) for p in results.sweep()]], markdown=True),
        "",
        f"### Fan-out ({chart.size_label(FAN_SIZE)})",
        "",
        grid(HEADER, [[pair_row(p) for p in results.fanout(counts)]], markdown=True),
        "",
        "### memory:// against pyee and broadcaster (in process)",
        "",
        memory.table(results.memory, markdown=True) if results.memory else "(no results)",
        "",
        "### Request/reply round trip (sequential, 64 B)",
        "",
        "One requester and one responder process per contender (nanomitter's hub or the "
        "nats-server in a process of its own), one request in flight; `bus.request` against "
        "the raw library's own request/reply (ZeroMQ and nng: REQ/REP dialled directly, no "
        "hub). Ratio: nanomitter's p50 / raw's. The diagnostics are in the Request/reply "
        "section below.",
        "",
        grid(REQUEST_HEADER, [request_rows(results)], markdown=True)
        if results.requests
        else "(no results)",
        "",
        "### Loss accounting and goals",
        "",
        headline(results),
        "",
        _bullets(verdicts(results)),
        "",
        "### Run details",
        "",
        _bullets(details),
        END,
    ]
    return "\n".join(parts)


def update_markdown(path: Path, generated: str) -> None:
    """Put ``generated`` between the markers, keeping the rest of the file; a file without
    markers gets it after its title."""
    if not path.exists():
        path.write_text(f"# Benchmarks\n\n{generated}\n", encoding="utf-8")
        return
    text = path.read_text(encoding="utf-8")
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + generated + rest.split(END, 1)[1]
    else:
        title, _, body = text.partition("\n")
        text = f"{title}\n\n{generated}\n{body}"
    path.write_text(text, encoding="utf-8")


def draw(path: Path, results: Results, meta: dict[str, Any], counts: Sequence[int]) -> None:
    def series(pairs: Iterator[Pair], key: str) -> dict[str, dict[int, tuple[float, float]]]:
        out: dict[str, dict[int, tuple[float, float]]] = {}
        for p in pairs:
            at = p.nano.size if key == "size" else p.nano.subs
            out.setdefault(p.transport, {})[at] = (p.raw.delivered, p.nano.delivered)
        return out

    date = str(meta["date"]).split(" ")[0]
    title = (
        f"nanomitter against raw pynng, pyzmq and nats-py: {cpu_model()}, "
        f"{os.cpu_count()} cores, {date}"
    )
    notes = [
        "Flat out, delivered events/s per subscriber, median of the runs; every node its own "
        f"process; 1-minute load average {meta['load'][0]:.2f} at the start."
    ]
    chart.render(
        path, title, series(results.sweep(), "size"), series(results.fanout(counts), "subs"), notes
    )


# ---------------------------------------------------------------------------- main


def measure(profile: Profile, results: Path) -> None:
    """Run every job, then write ``suite.json`` (when, how long, the load, exit codes)."""
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    date = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    codes = {job.name: run(job, results, profile.timeout) for job in jobs(profile)}
    meta = {
        "date": date,
        "seconds": time.perf_counter() - started,
        "load": [load_before, os.getloadavg()[0]],
        "quick": profile is QUICK,
        "codes": codes,
    }
    (results / "suite.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny counts")
    parser.add_argument("--out-dir", type=Path, default=DOCS, help="where the .md and .png go")
    parser.add_argument("--results-dir", type=Path, help="keep each script's JSON here")
    parser.add_argument(
        "--render-only", action="store_true", help="no runs: redraw from --results-dir"
    )
    args = parser.parse_args(argv)
    if args.render_only and not args.results_dir:
        parser.error("--render-only needs --results-dir")
    profile = QUICK if args.quick else FULL
    counts = sorted(profile.fan_counts)
    with contextlib.ExitStack() as stack:
        results_dir: Path = args.results_dir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="nanomitter-bench-"))
        )
        results_dir.mkdir(parents=True, exist_ok=True)
        if not args.render_only:
            measure(profile, results_dir)
        meta: dict[str, Any] = json.loads((results_dir / "suite.json").read_text("utf-8"))
        results = load(results_dir, [job.name for job in jobs(profile)])
    args.out_dir.mkdir(parents=True, exist_ok=True)
    markdown, png = args.out_dir / "benchmarks.md", args.out_dir / "benchmarks.png"
    update_markdown(markdown, section(results, meta, counts))
    draw(png, results, meta, counts)
    print()
    print(summary(results, counts, markdown=False))
    if results.requests:
        print()
        print(grid(REQUEST_HEADER, [request_rows(results)], markdown=False))
    print()
    print("\n".join(verdicts(results)))
    found = problems(results)
    for text in found:
        print(f"PROBLEM: {text}")
    print(f"wrote {markdown} and {png}; wall time {meta['seconds']:.0f} s")
    if results.missing:
        return 2
    return 1 if found or any(meta["codes"].values()) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the running script stops and reaps its own children
        print("interrupted", file=sys.stderr)
        sys.exit(130)
