"""The request/reply benchmark still runs across processes (a smoke run; no timing is asserted).

What is asserted: every transport gives a row for the raw library and for nanomitter, with
the ratio on the raw row; ``--json``, ``--transports`` and ``--raw-loop`` give the contenders
asked for, with ordered percentiles; no child process fails (no traceback on stderr).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parent.parent / "benchmarks" / "request_bench.py"
RAW = {
    "nng": "raw pynng Req0/Rep0",
    "zmq": "raw pyzmq REQ/REP",
    "nats": "raw nats-py request",
    "memory": "asyncio.Queue",
}
TINY = ("--count", "50", "--warm", "10", "--repeats", "1")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCHMARK), *TINY, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.timeout(90)
def test_every_transport_gives_raw_and_nanomitter_rows() -> None:
    result = run("--markdown")
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "| transport | contender | p50 µs |" in out
    for transport, raw in RAW.items():
        assert f"| {transport} | {raw} |" in out, (transport, out)
        assert f"| {transport} | nanomitter |" in out, (transport, out)
    assert out.count("x slower |") + out.count("x faster |") >= 3 * len(RAW)
    assert "Traceback" not in result.stderr, result.stderr


@pytest.mark.timeout(90)
def test_json_output_and_filters() -> None:
    result = run("--json", "--transports", "zmq,memory", "--raw-loop", "block,asyncio")
    assert result.returncode == 0, result.stdout + result.stderr
    record = json.loads(result.stdout)
    contenders = [(r["transport"], r["contender"]) for r in record["results"]]
    assert contenders == [
        ("zmq", "raw pyzmq REQ/REP (block)"),
        ("zmq", "raw pyzmq REQ/REP (asyncio)"),
        ("zmq", "nanomitter"),
        ("memory", "asyncio.Queue"),
        ("memory", "nanomitter"),
    ]
    for figures in record["results"]:
        assert figures["p50_us"] > 0
        assert figures["p50_us"] <= figures["p90_us"] <= figures["p99_us"]
        assert figures["requests_per_s"] > 0
        assert len(figures["trials"]) == 1
    assert "Traceback" not in result.stderr, result.stderr
