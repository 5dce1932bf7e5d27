"""examples/: the seed's master and workers and the price service as real processes, and the
compose file."""

from __future__ import annotations

import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from nanomitter.transports.registry import transport_from_url
from peers import free_port, running

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
MASTER = [sys.executable, str(EXAMPLES / "master.py")]
WORKER = [sys.executable, str(EXAMPLES / "worker.py")]
PRICE_SERVICE = [sys.executable, str(EXAMPLES / "price_service.py")]
STARTED = re.compile(r"^(master|worker) (\S{21}) on (\S+), ")
PRICE = re.compile(r"^stockprice from (\S{21}): \{'ticker': '([A-Z]+)', 'price': \d+\.\d+\}$")


@pytest.fixture
def anyio_backend() -> str:
    """The examples run in processes of their own; the test's loop only waits for lines."""
    return "asyncio"


def started(line: str) -> bool:
    return STARTED.match(line) is not None


def price_from(sender: str) -> Callable[[str], bool]:
    return lambda line: line.startswith(f"stockprice from {sender}:")


@pytest.mark.anyio
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
async def test_master_logs_the_prices_of_two_worker_processes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = f"tcp://127.0.0.1:{free_port()}"
    monkeypatch.setenv("NANOMITTER_URL", url)  # the examples' only configuration
    async with running(MASTER) as (master, master_out):
        line = await master_out.wait_for(started)  # first: it binds and becomes the hub
        assert line.endswith(f"on {url}, logging every event")
        monkeypatch.setenv("TICKER", "AAPL")
        async with running(WORKER) as (worker_1, out_1):
            monkeypatch.setenv("TICKER", "MSFT")
            async with running(WORKER) as (worker_2, out_2):
                ids = []
                for output in (out_1, out_2):
                    match = STARTED.match(await output.wait_for(started))
                    assert match is not None
                    ids.append(match.group(2))
                assert len(set(ids)) == 2
                for sender, ticker in zip(ids, ("AAPL", "MSFT"), strict=True):
                    price = await master_out.wait_for(price_from(sender))
                    match = PRICE.match(price)
                    assert match is not None, price
                    assert match.group(2) == ticker
                for worker in (worker_1, worker_2):
                    worker.send_signal(signal.SIGTERM)
                with anyio.fail_after(20):
                    codes = [await worker_1.wait(), await worker_2.wait()]
                for output in (out_1, out_2):
                    await output.wait_for(lambda line: line.startswith("stats: Stats("))
        master.send_signal(signal.SIGTERM)
        with anyio.fail_after(20):
            master_code = await master.wait()
        await master_out.wait_for(lambda line: line.startswith("stats: Stats("))
    assert codes == [0, 0], out_1.lines + out_2.lines
    assert master_code == 0, master_out.lines
    for lines in (master_out.lines, out_1.lines, out_2.lines):
        assert "SIGTERM: stopping" in lines
        assert not any("Traceback" in line for line in lines), lines
    final = re.search(r"lost=(\d+)", master_out.lines[-1])
    assert final is not None and final.group(1) == "0"


async def run_client(*args: str, last: str) -> tuple[int, list[str]]:
    """Run ``price_service.py`` with ``args`` to its end: its exit code and its lines, up to
    the one that contains ``last`` (it exits right after printing it)."""
    async with running([*PRICE_SERVICE, *args]) as (client, output):
        with anyio.fail_after(20):
            code = await client.wait()
        await output.wait_for(lambda line: last in line)
    return code, output.lines


@pytest.mark.anyio
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
async def test_price_service_answers_requests_and_surveys_from_other_processes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = f"tcp://127.0.0.1:{free_port()}"
    monkeypatch.setenv("NANOMITTER_URL", url)
    monkeypatch.delenv("PRICER", raising=False)
    async with running([*PRICE_SERVICE, "serve"]) as (service, service_out):
        ready = await service_out.wait_for(lambda line: line.startswith("ready: "))
        match = re.match(rf"^ready: pricer (\S{{21}}) on {re.escape(url)}, answering price$", ready)
        assert match is not None, ready
        pricer_id = match.group(1)

        code, lines = await run_client("ask", "AAPL", last="from")
        assert (code, lines) == (0, ["AAPL 251.3 from pricer"])

        code, lines = await run_client("ask", "ZZZ", last="Error")
        assert code == 1, lines
        assert lines == [
            f"RemoteError: service 'pricer' ({pricer_id}) failed on 'price': "
            "LookupError: no price for ZZZ"
        ]

        code, lines = await run_client("survey", "MSFT", last="answered")
        assert (code, lines) == (0, [f"pricer ({pricer_id}): 411.6", "1 pricer(s) answered"])

        service.send_signal(signal.SIGTERM)
        with anyio.fail_after(20):
            service_code = await service.wait()
        stats = await service_out.wait_for(lambda line: line.startswith("stats: Stats("))
    assert service_code == 0, service_out.lines
    assert "SIGTERM: stopping" in service_out.lines
    served = re.search(r"served=(\d+)", stats)
    assert served is not None and int(served.group(1)) >= 3, stats  # and the probes' answers
    # the unknown ticker is the responder's exception: reported there, once, with its traceback
    assert sum("Traceback" in line for line in service_out.lines) == 1, service_out.lines


def test_compose_file_runs_a_master_hub_and_two_workers() -> None:
    yaml = pytest.importorskip("yaml")  # PyYAML comes with the docs tools; not a dependency
    services = yaml.safe_load((EXAMPLES / "compose.yaml").read_text())["services"]
    assert set(services) == {"master", "worker-1", "worker-2"}
    master = services["master"]
    assert master["command"] == ["python", "examples/master.py"]
    assert master["environment"]["NANOMITTER_URL"] == "tcp://0.0.0.0:55555?role=hub"
    for name in ("worker-1", "worker-2"):
        worker = services[name]
        assert worker["command"] == ["python", "examples/worker.py"]
        assert worker["environment"]["NANOMITTER_URL"] == "tcp://master:55555?role=node"
        assert worker["depends_on"] == ["master"]
    for service in services.values():
        build = service["build"]
        assert (EXAMPLES / build["context"] / build["dockerfile"]).resolve() == (
            EXAMPLES / "Dockerfile"
        )
        transport_from_url(service["environment"]["NANOMITTER_URL"])  # valid URL and options


def test_dockerfile_installs_the_package_and_copies_the_examples() -> None:
    dockerfile = (EXAMPLES / "Dockerfile").read_text()
    for step in ("COPY pyproject.toml README.md ./", "COPY src ./src", "RUN pip install"):
        assert step in dockerfile
    assert "COPY examples ./examples" in dockerfile
    ignored = (EXAMPLES / "Dockerfile.dockerignore").read_text().split()
    for kept in ("!pyproject.toml", "!README.md", "!src/nanomitter", "!examples/*.py"):
        assert kept in ignored  # the build context excludes .venv and the rest
