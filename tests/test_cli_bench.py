"""``nanomitter bench`` run as users run it: a subprocess, with its subscriber processes.

No timing is asserted (two shared, noisy cores): only that every event is accounted for,
that ``stats().lost`` matches the loss the subscribers observed, and that failures are
one clean line with the right exit code.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nanomitter.cli.bench import make_pad
from nats_support import NatsAuth, NatsServer
from peers import free_port, running
from zmq_support import free_port_pair

BENCH = [sys.executable, "-m", "nanomitter.cli", "bench"]
QUICK = ["--latency-seconds", "0.2"]
READY = re.compile(r"ready \(pid ([\d, ]+)\)")


def ready_pids(line: str) -> list[int] | None:
    """The subscriber pids in the bench's "... ready (pid 1, 2)" line (None for other lines)."""
    found = READY.search(line)
    return [int(pid) for pid in found.group(1).split(", ")] if found else None


def bench(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BENCH, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def json_lines(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert result.returncode == 0, result.stdout + result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_payload_sizes_are_exact() -> None:
    for size in (64, 1024, 100_000):
        assert make_pad(size)[1] == size
    assert make_pad(63)[1] == 64  # msgspec's string header grows at 32 characters


def test_memory_delivers_every_event_and_prints_only_json() -> None:
    result = bench("--url", "memory://bench", "--count", "2000", "--json", *QUICK)
    [row] = json_lines(result)
    assert "memory://bench" not in result.stderr  # no notes, no bar: only the JSON
    assert "Traceback" not in result.stderr
    assert row["url"] == "memory://bench"
    assert row["transport"] == "memory"
    assert (row["count"], row["size"], row["subscribers"]) == (2000, 64, 1)
    assert [s["delivered"] for s in row["per_subscriber"]] == [2000]
    assert row["loss"] == 0
    assert row["lost_matches"] is True
    assert row["lost_reported"] == row["lost_observed"] == 0
    assert row["p50_us"] > 0
    assert row["p99_us"] >= row["p50_us"]


def test_nng_two_subscriber_processes_account_for_every_event() -> None:
    url = f"tcp://127.0.0.1:{free_port()}"
    result = bench("--url", url, "--count", "3000", "--subscribers", "2", "--json", *QUICK)
    [row] = json_lines(result)
    assert (row["url"], row["transport"], row["subscribers"]) == (url, "nng", 2)
    assert len(row["per_subscriber"]) == 2
    for sub in row["per_subscriber"]:
        # flat out, nng may drop: what was not delivered is missing, and nanomitter says so
        assert sub["delivered"] + sub["missing"] == 3000
        assert sub["delivered"] > 0
        assert sub["lost_reported"] == sub["lost_observed"]
    assert row["lost_matches"] is True
    assert row["latency_events"] == 400
    assert row["p50_us"] is not None


def test_paced_nng_run_loses_nothing() -> None:
    url = f"tcp://127.0.0.1:{free_port()}"
    result = bench("--url", url, "--count", "1000", "--rate", "2000", "--json", *QUICK)
    [row] = json_lines(result)
    assert row["rate"] == 2000
    assert [s["delivered"] for s in row["per_subscriber"]] == [1000]
    assert row["lost_matches"] is True


def test_compare_prints_one_table_with_a_ratio_per_url() -> None:
    nng = f"tcp://127.0.0.1:{free_port()}"
    zmq = f"zmq+tcp://127.0.0.1:{free_port_pair()}"
    result = bench("--compare", nng, zmq, "--count", "2000", *QUICK)
    assert result.returncode == 0, result.stdout + result.stderr
    table = result.stdout
    assert "ratio" in table
    nng_row = next(line for line in table.splitlines() if nng in line)
    zmq_row = next(line for line in table.splitlines() if zmq in line)
    assert "1.00x" in nng_row
    assert re.search(r"\d+\.\d\dx", zmq_row)
    assert "zmq" in zmq_row
    assert "MISMATCH" not in table
    assert "throughput: sent" in result.stderr  # the per-phase lines a person sees
    [machine] = [line for line in table.splitlines() if line.startswith("machine: CPU: ")]
    assert f"{os.cpu_count()} cores, load " in machine  # figures name where they were taken
    assert "pynng " in machine and "pyzmq " in machine


def test_compare_json_adds_the_ratio() -> None:
    result = bench("--compare", "memory://one", "memory://two", "--count", "500", "--json", *QUICK)
    first, second = json_lines(result)
    assert (first["url"], second["url"]) == ("memory://one", "memory://two")
    assert first["ratio"] == 1.0
    assert second["ratio"] > 0
    assert first["machine"].startswith("CPU: ") and "nanomitter " in first["machine"]


def test_nats_with_credentials_works_and_never_shows_them(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats", auth=NatsAuth(user="app", password="s3cret"))
    server.start()
    try:
        url = f"nats://app:s3cret@127.0.0.1:{server.port}"
        result = bench("--url", url, "--count", "1000", "--rate", "5000", "--json", *QUICK)
    finally:
        server.kill()
    [row] = json_lines(result)
    assert row["url"] == f"nats://app:***@127.0.0.1:{server.port}"
    assert row["transport"] == "nats"
    assert [s["delivered"] for s in row["per_subscriber"]] == [1000]
    assert row["lost_matches"] is True
    assert "s3cret" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--count", "-1"], "--count"),
        (["--size", "8"], "--size"),
        (["--url", "foo://x"], "unknown bus URL scheme 'foo'"),
        (["--url", "tcp://127.0.0.1:1?bogus=1"], "unknown option(s) 'bogus'"),
        (["--url", "tcp://127.0.0.1:1?role=sideways"], "role='sideways'"),
        (["memory://a", "memory://b"], "add --compare"),
        (["--compare", "memory://a"], "at least two URLs"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(args: list[str], says: str) -> None:
    line = assert_one_line_error(bench(*args), 2)
    assert says in line
    assert "--help" in line


def test_unreachable_nats_server_is_a_runtime_failure() -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    line = assert_one_line_error(bench("--url", url), 1)
    assert f"cannot open {url}" in line
    assert "nats-server" in line


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the tests below drive a subprocess; one backend is enough


@pytest.mark.anyio
async def test_ctrl_c_stops_and_reaps_every_subscriber() -> None:
    url = f"tcp://127.0.0.1:{free_port()}"
    command = [*BENCH, "--url", url, "--subscribers", "2", "--count", "1000000", "--rate", "2000"]
    async with running(command) as (process, output):
        pids = ready_pids(await output.wait_for(lambda line: bool(ready_pids(line)), 30))
        assert pids is not None and len(pids) == 2
        process.send_signal(signal.SIGINT)
        await process.wait()
    assert process.returncode == 130, "\n".join(output.lines)
    assert "interrupted" in output.lines
    assert not any("Traceback" in line for line in output.lines)
    for pid in pids:  # the bench waited for its subscribers before it exited
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.anyio
async def test_a_subscriber_that_dies_is_named() -> None:
    url = f"tcp://127.0.0.1:{free_port()}"
    command = [*BENCH, "--url", url, "--subscribers", "2", "--count", "1000000", "--rate", "2000"]
    async with running(command) as (process, output):
        pids = ready_pids(await output.wait_for(lambda line: bool(ready_pids(line)), 30))
        assert pids is not None
        victim = pids[1]
        os.kill(victim, signal.SIGKILL)
        await process.wait()
    assert process.returncode == 1, "\n".join(output.lines)
    errors = [line for line in output.lines if line.startswith("Error: ")]
    assert errors == [f"Error: subscriber 2 (pid {victim}) was killed by SIGKILL"]
    assert not any("Traceback" in line for line in output.lines)
