"""The seed's stock-price demo (``make demo``): a hub process and worker processes.

``make demo`` runs ``python -m nanomitter.demo --seconds $(DURATION)``; these tests run it the
same way, on free ports, and check that prices cross process boundaries, that the processes
stop cleanly, and that a URL that cannot cross processes is refused.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.abc
import pytest

from nanomitter import demo
from nats_support import NatsServer, nats_server
from peers import Output, free_port, running
from zmq_support import tcp_url

pytestmark = pytest.mark.anyio
__all__ = ["nats_server"]  # a fixture: imported so that pytest finds it

ROOT = Path(__file__).resolve().parent.parent
LABEL = re.compile(r"^(demo|hub|w\d+) +\[pid (\d+)\] ")
PRICE = re.compile(
    r"^hub +\[pid (\d+)\] stockprice from (worker-\d+) \(pid (\d+)\): ([A-Z]+\d*) (\d+\.\d\d)$"
)
WORKER_SUMMARY = re.compile(
    r"^demo +\[pid \d+\]   (worker-\d+) \(pid (\d+)\)  emitted (\d+), "
    r"the hub received (\d+); lost=(\d+) dropped=(\d+)$"
)


@pytest.fixture
def anyio_backend() -> str:
    """The demo runs in processes of its own; the test's loop only waits for lines."""
    return "asyncio"


def pids(lines: list[str]) -> dict[str, int]:
    """Process label (demo, hub, w1 ...) -> pid, from the labels of the demo's output."""
    found: dict[str, int] = {}
    for line in lines:
        match = LABEL.match(line)
        if match:
            found[match.group(1)] = int(match.group(2))
    return found


def is_alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie nobody reaped counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


def kill_children(lines: list[str]) -> None:
    """On a failed test, no hub or worker outlives it (they are the demo's children)."""
    for label, pid in pids(lines).items():
        if label == "demo" or not is_alive(pid):
            continue
        try:
            if b"nanomitter.demo" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue  # the pid was reused: not ours
        except OSError:
            continue
        os.kill(pid, signal.SIGKILL)


@asynccontextmanager
async def demo_process(*args: str) -> AsyncIterator[tuple[anyio.abc.Process, Output]]:
    """``python -m nanomitter.demo ARGS`` (what ``make demo`` runs), children killed on exit."""
    command = [sys.executable, "-m", "nanomitter.demo", *args]
    async with running(command) as (process, output):
        try:
            yield process, output
        finally:
            kill_children(output.lines)


def price_from(worker: str) -> Callable[[str], bool]:
    def is_price(line: str) -> bool:
        match = PRICE.match(line)
        return match is not None and match.group(2) == worker

    return is_price


async def summed_up(output: Output, workers: int) -> None:
    """Wait for the summary's last line: the output is complete (the test reads it after)."""
    last = f"   worker-{workers} (pid "
    await output.wait_for(lambda line: line.startswith("demo") and last in line, timeout=10)


def check_prices_crossed(lines: list[str], workers: int) -> None:
    """The hub logged prices from every worker, naming worker pids that are not its own."""
    labels = pids(lines)
    assert {"demo", "hub", *(f"w{i}" for i in range(1, workers + 1))} <= set(labels), lines
    assert len(set(labels.values())) == len(labels), f"one process per label: {labels}"
    prices = [m.groups() for m in map(PRICE.match, lines) if m]
    for i in range(1, workers + 1):
        from_worker = [p for p in prices if p[1] == f"worker-{i}"]
        assert from_worker, f"no price from worker-{i} reached the hub:\n" + "\n".join(lines)
        for hub_pid, _, worker_pid, _, _ in from_worker:
            assert int(hub_pid) == labels["hub"]
            assert int(worker_pid) == labels[f"w{i}"] != labels["hub"]


def check_summary(lines: list[str], workers: int) -> None:
    summaries = {m.group(1): m.groups() for m in map(WORKER_SUMMARY.match, lines) if m}
    assert sorted(summaries) == [f"worker-{i}" for i in range(1, workers + 1)], lines
    labels = pids(lines)
    for name, pid, emitted, received, lost, dropped in summaries.values():
        assert int(pid) == labels[f"w{name.removeprefix('worker-')}"]
        assert 1 <= int(received) <= int(emitted)
        assert (lost, dropped) == ("0", "0")
    assert any(re.search(r"  hub +\(pid \d+\)  logged \d+ stockprice .* lost=0 ", x) for x in lines)


def check_stopped(lines: list[str]) -> None:
    assert not any("Traceback" in line for line in lines), "\n".join(lines)
    children = {label: pid for label, pid in pids(lines).items() if label != "demo"}
    assert children
    assert [label for label, pid in children.items() if is_alive(pid)] == []


def test_make_demo_runs_the_module() -> None:
    """The Makefile's demo target is the command these tests run."""
    recipe = re.search(r"^demo:.*\n\t(.+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert recipe, "no demo target in the Makefile"
    assert recipe.group(1) == "$(PY) -m nanomitter.demo --seconds $(DURATION)"


async def test_demo_prices_flow_between_processes_and_it_stops_by_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # as `make demo DURATION=3` runs it; the bus comes from $NANOMITTER_URL (a free port)
    monkeypatch.setenv("NANOMITTER_URL", f"tcp://127.0.0.1:{free_port()}")
    async with demo_process("--seconds", "3") as (process, output):
        # the acceptance: prices flow between processes within 10 s
        await output.wait_for(lambda line: PRICE.match(line) is not None, timeout=10)
        with anyio.fail_after(30):
            returncode = await process.wait()
        await summed_up(output, workers=2)
    lines = output.lines
    assert returncode == 0, "\n".join(lines)
    assert pids(lines)["demo"] == process.pid
    check_prices_crossed(lines, workers=2)
    check_summary(lines, workers=2)
    check_stopped(lines)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_demo_stops_cleanly_on_a_signal(signum: signal.Signals) -> None:
    url = f"tcp://127.0.0.1:{free_port()}"
    async with demo_process("--url", url, "--seconds", "0", "--workers", "3") as (process, output):
        for i in (1, 2, 3):  # every worker's prices reached the hub: then interrupt
            await output.wait_for(price_from(f"worker-{i}"), timeout=30)
        process.send_signal(signum)
        with anyio.fail_after(30):
            returncode = await process.wait()
        await summed_up(output, workers=3)
    lines = output.lines
    assert returncode == 0, "\n".join(lines)
    assert any(f"{signum.name}: stopping the workers, then the hub" in line for line in lines)
    closing = [x for x in lines if re.match(r"^(hub|w\d) +\[pid \d+\] SIGTERM: stopping$", x)]
    assert len(closing) == 4  # the hub and the 3 workers closed their emitters
    check_prices_crossed(lines, workers=3)
    check_summary(lines, workers=3)
    check_stopped(lines)


async def test_demo_on_zeromq_runs_the_proxy_in_the_hub_process() -> None:
    async with demo_process("--url", tcp_url(), "--seconds", "2") as (process, output):
        with anyio.fail_after(30):
            returncode = await process.wait()
        await summed_up(output, workers=2)
    lines = output.lines
    assert returncode == 0, "\n".join(lines)
    assert any(re.match(r"^hub +\[pid \d+\] ready: the hub at zmq\+tcp://", x) for x in lines)
    check_prices_crossed(lines, workers=2)
    check_stopped(lines)


async def test_demo_on_nats_has_no_hub_process_the_server_is_the_hub(
    nats_server: NatsServer,
) -> None:
    async with demo_process("--url", nats_server.url, "--seconds", "2") as (process, output):
        with anyio.fail_after(30):
            returncode = await process.wait()
        await summed_up(output, workers=2)
    lines = output.lines
    assert returncode == 0, "\n".join(lines)
    assert any(
        re.search(r"^hub .* ready: joined nats://.* \(its server is the hub\)", x) for x in lines
    )
    check_prices_crossed(lines, workers=2)
    check_stopped(lines)


async def test_demo_fails_clearly_when_its_address_is_taken() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        url = f"tcp://127.0.0.1:{taken.getsockname()[1]}"
        async with demo_process("--url", url, "--seconds", "1") as (process, output):
            with anyio.fail_after(30):
                returncode = await process.wait()
            await output.wait_for(lambda line: "error: hub exited before it was ready" in line)
    assert returncode == 1
    assert any("the address is in use" in line for line in output.lines), output.lines
    assert not any(line.startswith("w1") for line in output.lines)  # no worker was started
    check_stopped(output.lines)


def test_demo_refuses_memory_urls_in_one_line() -> None:
    command = [sys.executable, "-m", "nanomitter.demo", "--url", "memory://demo", "--seconds", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("nanomitter demo: memory:// cannot cross processes")


def test_run_refuses_bad_urls_before_starting_anything(capsys: pytest.CaptureFixture[str]) -> None:
    """``run()`` is what ``nanomitter demo`` calls: it returns exit codes, it does not raise."""
    assert demo.run("memory://demo", seconds=1) == 2
    assert demo.run("inproc://demo", seconds=1) == 2
    assert demo.run("nope://demo", seconds=1) == 2
    assert demo.run("tcp://127.0.0.1:1?bogus=1", seconds=1) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    errors = captured.err.splitlines()
    assert len(errors) == 4
    assert "unknown bus URL scheme 'nope'" in errors[2]
    assert "unknown option(s) 'bogus'" in errors[3]


@pytest.mark.parametrize(
    ("url", "hub", "worker"),
    [
        ("tcp://127.0.0.1:5", "tcp://127.0.0.1:5?role=hub", "tcp://127.0.0.1:5?role=node"),
        ("zmq+tcp://h:5?hwm=9", "zmq+tcp://h:5?hwm=9&role=hub", "zmq+tcp://h:5?hwm=9&role=node"),
        ("tcp://h:5?role=auto", "tcp://h:5?role=auto", "tcp://h:5?role=auto"),
        ("nats://h:4222", "nats://h:4222", "nats://h:4222"),
    ],
)
def test_the_hub_binds_and_workers_only_join(url: str, hub: str, worker: str) -> None:
    assert demo.role_urls(url) == (hub, worker)


def test_tickers_are_distinct_per_worker() -> None:
    tickers = [demo.ticker_for(i)[0] for i in range(1, 20)]
    assert len(set(tickers)) == len(tickers)
    assert tickers[:2] == ["AAPL", "MSFT"]
