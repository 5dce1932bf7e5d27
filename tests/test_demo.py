"""The seed's stock-price demo (``make demo``), run as users run it: a subprocess."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from anyio.streams.text import TextReceiveStream

from peers import free_port

DEMO = Path(__file__).resolve().parent.parent / "examples" / "stockprice.py"
ANNOUNCE = re.compile(r"^(worker-\d+) \((\S+)\) emits stockprice for (\S+)$", re.MULTILINE)
SUMMARY = re.compile(r"^hub logged (\d+) of (\d+) event\(s\): (.*)$", re.MULTILINE)

pytestmark = pytest.mark.anyio


def check_output(output: str, workers: int) -> None:
    """Every worker announced itself, the hub logged its prices, and the summary adds up."""
    announced = ANNOUNCE.findall(output)
    assert [name for name, _, _ in announced] == [f"worker-{i + 1}" for i in range(workers)]
    for _, sender, ticker in announced:
        hub_line = rf"hub <- {re.escape(sender)}  stockprice #\d+ +{re.escape(ticker)} +\d+\.\d\d$"
        assert re.search(hub_line, output, re.MULTILINE), f"no event of {ticker}:\n{output}"
    assert "stats:" in output
    assert re.search(r"^  hub +emitted=0 +received=\d+ .* lost=0 ", output, re.MULTILINE)
    summary = SUMMARY.search(output)
    assert summary, output
    logged, sent, counts = summary.groups()
    assert int(logged) == int(sent) > 0
    for i in range(workers):
        count = re.search(rf"worker-{i + 1}=(\d+)", counts)
        assert count and int(count.group(1)) >= 1, counts


def bus_env(url: str | None = None) -> dict[str, str]:
    """The demo's default URL comes from $NANOMITTER_URL: a free port, never 55555, in tests."""
    return {**os.environ, "NANOMITTER_URL": url or f"tcp://127.0.0.1:{free_port()}"}


@pytest.mark.parametrize("url", ["memory://stockprice", None], ids=["memory", "nng-tcp"])
async def test_demo_runs_for_its_duration_and_exits_cleanly(
    anyio_backend: str, url: str | None
) -> None:
    env = bus_env(url)
    command = [sys.executable, str(DEMO), "--duration", "2", "--backend", anyio_backend]
    with anyio.fail_after(60):
        result = await anyio.run_process(command, check=False, env=env)
    output, errors = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, output + errors
    assert errors == ""
    check_output(output, workers=3)
    assert f"stock-price demo on {env['NANOMITTER_URL']}: a hub and 3 worker(s)" in output


async def test_demo_workers_option(anyio_backend: str) -> None:
    command = [sys.executable, str(DEMO), "--duration", "1", "--workers", "9", "--interval", "0.1"]
    with anyio.fail_after(60):
        result = await anyio.run_process(
            [*command, "--backend", anyio_backend], check=False, env=bus_env()
        )
    output = result.stdout.decode()
    assert result.returncode == 0, output + result.stderr.decode()
    check_output(output, workers=9)
    assert "emits stockprice for AAPL2" in output  # the 9th worker gets a ticker of its own


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_demo_stops_cleanly_on_signal(anyio_backend: str, signum: signal.Signals) -> None:
    command = [sys.executable, str(DEMO), "--duration", "0", "--backend", anyio_backend]
    output = ""
    with anyio.fail_after(60):
        async with await anyio.open_process(
            command, stderr=subprocess.STDOUT, env=bus_env()
        ) as process:
            assert process.stdout is not None
            chunks = TextReceiveStream(process.stdout)
            # wait until every worker's first event reached the hub, then interrupt
            async for chunk in chunks:
                output += chunk
                if all(f"stockprice #1    {t}" in output for t in ("AAPL", "MSFT", "NVDA")):
                    break
            process.send_signal(signum)
            async for chunk in chunks:
                output += chunk
            returncode = await process.wait()
    assert returncode == 0, output
    assert f"{signum.name}: stopping" in output
    assert "Traceback" not in output
    check_output(output, workers=3)


def test_demo_rejects_an_unknown_scheme() -> None:
    result = subprocess.run(
        [sys.executable, str(DEMO), "--url", "nope://x", "--duration", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "unknown bus URL scheme 'nope'; known schemes: " in result.stderr
    assert "memory://" in result.stderr
    assert "Traceback" not in result.stderr
