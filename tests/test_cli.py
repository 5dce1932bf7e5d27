"""The ``nanomitter`` command, run as users run it: each command in its own process.

Every bus here is on a free port (never the default 55555): each command gets an explicit
``--url``, and the table of bad arguments runs with ``$NANOMITTER_URL`` on a free port too.
Nothing sleeps to synchronise: the tests wait for the lines the commands print.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

import nanomitter
from nanomitter.cli.hub import PeerNews
from nanomitter.transports.nng import NngTransport
from nanomitter.transports.zmq import ZmqTransport
from peers import Output, Recorder, free_port, running
from zmq_support import free_port_pair, ipc_url

CLI = [sys.executable, "-m", "nanomitter.cli"]
DEADLINE = 30
COMMANDS = ["hub", "sub", "pub", "demo", "bench"]

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    """The commands run in their own processes; this side only waits for them."""
    return "asyncio"


def cli(*args: str) -> list[str]:
    return [*CLI, *args]


def containing(text: str) -> Callable[[str], bool]:
    return lambda line: text in line


async def exit_code(process: anyio.abc.Process) -> int:
    with anyio.fail_after(DEADLINE):
        return await process.wait()


async def run_command(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run one command to its end (killed if it outlives the deadline)."""
    with anyio.fail_after(DEADLINE):
        return await anyio.run_process(cli(*args), input=stdin, check=False)


def events_in(output: Output) -> list[dict[str, Any]]:
    """The ``--json`` lines (stdout and stderr arrive merged; status lines are not JSON)."""
    return [json.loads(line) for line in output.lines if line.startswith("{")]


def url_for(transport: str) -> str:
    if transport == "zmq":
        return f"zmq+tcp://127.0.0.1:{free_port_pair()}"
    return f"tcp://127.0.0.1:{free_port()}"


@pytest.mark.parametrize(
    ("transport", "stop"), [("nng", signal.SIGTERM), ("zmq", signal.SIGINT)], ids=["nng", "zmq"]
)
async def test_hub_sub_and_pub_in_separate_processes(
    anyio_backend: str, transport: str, stop: signal.Signals
) -> None:
    url = url_for(transport)
    async with running(cli("hub", url, "--stats-interval", "0.5")) as (hub, hub_out):
        await hub_out.wait_for(containing("hub running on"), DEADLINE)

        second = await run_command("hub", url)  # the address is taken: a one-line error
        assert second.returncode == 1, second.stderr
        assert b"address is in use" in second.stderr, second.stderr

        async with running(cli("sub", "--json", "--count", "3", "--url", url)) as (
            sub,
            sub_out,
        ):
            await sub_out.wait_for(containing(f"listening on {url} for *"), DEADLINE)
            await hub_out.wait_for(containing("peer joined (1 connected)"), DEADLINE)

            published = await run_command(
                "pub", "stock.AAPL", '{"n":1}', "--count", "3", "--url", url
            )
            assert published.returncode == 0, published.stderr
            assert f"sent 3 event(s) on stock.AAPL to {url}".encode() in published.stderr

            assert await exit_code(sub) == 0, sub_out.lines
        events = events_in(sub_out)
        assert [(e["topic"], e["data"], e["seq"]) for e in events] == [
            ("stock.AAPL", {"n": 1}, 1),
            ("stock.AAPL", {"n": 1}, 2),
            ("stock.AAPL", {"n": 1}, 3),
        ], sub_out.lines
        assert len({e["sender"] for e in events}) == 1

        await hub_out.wait_for(containing("peer left (0 connected)"), DEADLINE)
        await hub_out.wait_for(containing("stats: peers="), DEADLINE)
        hub.send_signal(stop)
        assert await exit_code(hub) == 0, hub_out.lines
    assert any(f"hub stopped ({stop.name})" in line for line in hub_out.lines), hub_out.lines
    assert not any("Traceback" in line for line in hub_out.lines), hub_out.lines


async def test_hub_names_services_joining_and_leaving(anyio_backend: str) -> None:
    """Presence on the hub: a sub with --service is named when it joins and when it leaves
    (its bye on SIGTERM)."""
    url = url_for("nng")
    async with running(cli("hub", url, "--stats-interval", "0")) as (hub, hub_out):
        await hub_out.wait_for(containing("hub running on"), DEADLINE)
        async with running(cli("sub", "--service", "watcher", "--url", url)) as (sub, sub_out):
            await sub_out.wait_for(containing("listening on"), DEADLINE)
            joined = await hub_out.wait_for(containing("service watcher ("), DEADLINE)
            assert f"joined on {socket.gethostname()} (pid {sub.pid})" in joined, joined
            sub.send_signal(signal.SIGTERM)
            assert await exit_code(sub) == 0, sub_out.lines
        left = await hub_out.wait_for(lambda line: "watcher" in line and "left" in line, DEADLINE)
        assert left.endswith("left"), left
        hub.send_signal(signal.SIGTERM)
        assert await exit_code(hub) == 0, hub_out.lines


async def test_pub_reads_json_lines_and_sub_prints_readable_lines(anyio_backend: str) -> None:
    """The first sub finds no hub and becomes it (role=auto); pub reads stdin."""
    url = url_for("nng")
    async with running(cli("sub", "--json", "--count", "3", "--url", url)) as (
        json_sub,
        json_out,
    ):
        await json_out.wait_for(containing("this process is the hub"), DEADLINE)
        async with running(cli("sub", "numbers", "--url", url)) as (sub, sub_out):
            await sub_out.wait_for(containing(f"listening on {url} for numbers"), DEADLINE)
            lines = b'1\n"two"\n\n{"three": [3, 3.0, null, true]}\n'
            published = await run_command("pub", "numbers", "--url", url, stdin=lines)
            assert published.returncode == 0, published.stderr

            assert await exit_code(json_sub) == 0, json_out.lines
            assert [e["data"] for e in events_in(json_out)] == [
                1,
                "two",
                {"three": [3, 3.0, None, True]},
            ]
            readable = await sub_out.wait_for(containing('{"three":[3,3.0,null,true]}'))
            sender = events_in(json_out)[0]["sender"]
            assert f" numbers <- {sender}#3 " in readable, readable

            sub.send_signal(signal.SIGINT)  # the way to stop a sub without --count: exit 0
            assert await exit_code(sub) == 0, sub_out.lines
    assert not any("Traceback" in line for line in json_out.lines + sub_out.lines)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_pub_stopped_before_the_end_exits_128_plus_the_signal(
    anyio_backend: str, stop: signal.Signals
) -> None:
    url = url_for("nng")
    command = cli("pub", "tick", "1", "--count", "1000", "--rate", "5", "--url", url)
    async with running(command) as (pub, output):
        # alone on the bus, it became the hub and says so once it has joined
        await output.wait_for(containing("warning: no hub was running"), DEADLINE)
        pub.send_signal(stop)
        assert await exit_code(pub) == 128 + stop, output.lines
    assert any(f"interrupted ({stop.name}) after" in line for line in output.lines)


def peer_test_url(kind: str, tmp_path: Path) -> str:
    transport, _, scheme = kind.partition("-")
    if scheme == "tcp":
        return url_for(transport)
    return ipc_url() if transport == "zmq" else f"ipc://{tmp_path}/bus"


@pytest.mark.parametrize("kind", ["nng-tcp", "nng-ipc", "zmq-tcp", "zmq-ipc"])
async def test_a_hub_reports_other_peers_but_not_its_own_member(
    anyio_backend: str, kind: str, tmp_path: Path
) -> None:
    """What ``hub`` prints comes from the transports' ``on_peer``, called from their threads;
    on ipc every peer's address may be the same (or empty), yet each departure is reported."""
    url = peer_test_url(kind, tmp_path)
    news = PeerNews()
    changes = Recorder()
    hub = nanomitter.connect(url, role="hub")
    assert isinstance(hub.transport, NngTransport | ZmqTransport)
    hub.transport.on_peer = news.put
    try:
        async with hub, anyio.create_task_group() as group:
            group.start_soon(news.relay, lambda joined, address: changes((joined, address)))
            async with nanomitter.connect(url, role="node"):
                async with nanomitter.connect(url, role="node"):
                    await changes.wait(2)
                await changes.wait(3)
            await changes.wait(4)
            group.cancel_scope.cancel()
    finally:
        news.close()
    assert [joined for joined, _ in changes.events] == [True, True, False, False]
    if kind.endswith("tcp"):
        assert all(address.startswith("127.0.0.1:") for _, address in changes.events)
        first, second, second_left, first_left = (address for _, address in changes.events)
        assert (second_left, first_left) == (second, first), changes.events


NATS_PORT = free_port()
NNG_PORT = free_port()
BAD_ARGUMENTS = [
    # (arguments, exit code, a piece of the one-line error)
    (["sub", "--url", "foo://x"], 2, "unknown bus URL scheme 'foo'"),
    (["sub", "--url", f"tcp://127.0.0.1:{NNG_PORT}?bogus=1"], 2, "unknown option(s) 'bogus'"),
    (["sub", "--url", f"tcp://127.0.0.1:{NNG_PORT}?role=boss"], 2, "is not one of auto"),
    (["sub", "a.*x"], 2, "invalid pattern 'a.*x'"),
    (["sub", "--count", "0"], 2, "--count"),
    (["sub", "--url", "memory://x"], 2, "in-process bus"),
    (["pub", "a.*", "1"], 2, "invalid topic 'a.*'"),
    (["pub", "t", "hello"], 2, "quote it as JSON: '\"hello\"'"),
    (["pub", "t", "1", "--count", "-1"], 2, "--count"),
    (["pub", "t", "1", "--rate", "-5"], 2, "--rate"),
    (["pub"], 2, "Missing argument 'TOPIC'"),
    (["hub", "nats://127.0.0.1:4222"], 2, "run nats-server"),
    (["hub", "memory://x"], 2, "in-process bus"),
    (["hub", f"tcp://127.0.0.1:{NNG_PORT}?role=node"], 2, "drop role=node"),
    (["hub", "--stats-interval", "-1"], 2, "--stats-interval"),
    (["demo", "--workers", "0"], 2, "--workers"),
    (["frob"], 2, "No such command 'frob'"),
    (["sub", "--url", f"nats://127.0.0.1:{NATS_PORT}?connect_timeout=1"], 1, "nats-server"),
    (
        ["sub", "--url", f"tcp://127.0.0.1:{NNG_PORT}?role=node&connect_timeout=1"],
        1,
        "no hub answered",
    ),
]


@pytest.mark.parametrize(
    ("arguments", "code", "message"),
    BAD_ARGUMENTS,
    ids=[
        re.sub(r":\d+", ":PORT", " ".join(a[0])) for a in BAD_ARGUMENTS
    ],  # same in each xdist worker
)
def test_bad_arguments_get_one_line_and_an_exit_code(
    arguments: list[str], code: int, message: str
) -> None:
    environment = {**os.environ, "NANOMITTER_URL": f"tcp://127.0.0.1:{NNG_PORT}"}
    result = subprocess.run(
        cli(*arguments),
        env=environment,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == code, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ") and message in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("command", [[], *([name] for name in COMMANDS)], ids=["", *COMMANDS])
def test_help(command: list[str]) -> None:
    result = subprocess.run(
        cli(*command, "--help"),
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Usage: nanomitter {' '.join(command)}".rstrip())
    if not command:
        for name in COMMANDS:
            assert f"\n  {name} " in result.stdout, result.stdout


def test_the_console_script_is_installed() -> None:
    script = Path(sys.executable).with_name("nanomitter")
    if not script.exists():
        pytest.skip(f"no console script next to {sys.executable} (not an installed checkout)")
    result = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, timeout=DEADLINE, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("nanomitter, version ")


async def test_demo_shows_who_sent_what(anyio_backend: str) -> None:
    url = url_for("nng")
    result = await run_command("demo", "--seconds", "3", "--url", url)
    output = result.stdout.decode(errors="replace")
    assert result.returncode == 0, output + result.stderr.decode(errors="replace")
    assert "stockprice" in output, output
