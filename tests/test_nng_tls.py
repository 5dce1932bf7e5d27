"""tls+tcp://: members with certificates from the bus CA join; others cannot."""

from __future__ import annotations

from pathlib import Path

import anyio
import pynng
import pytest

import nanomitter
from nanomitter import DistributedEvent
from nanomitter.transports.nng import NoHubError
from peers import free_port
from tls_files import make_tls_files

pytestmark = pytest.mark.anyio


async def test_members_with_the_bus_ca_talk_and_strangers_are_refused(tmp_path: Path) -> None:
    good = make_tls_files(tmp_path / "good", "bus")
    rogue = make_tls_files(tmp_path / "rogue", "rogue")
    port = free_port()
    url = f"tls+tcp://127.0.0.1:{port}?{good.query()}"
    async with nanomitter.connect(url) as hub, nanomitter.connect(url, role="node") as member:
        got, got_both = anyio.Event(), anyio.Event()
        seen: list[DistributedEvent] = []

        def record(event: DistributedEvent) -> None:
            seen.append(event)
            got.set()
            if len(seen) == 2:
                got_both.set()

        hub.on("secret.>", record)
        await member.emit("secret.plan", {"launch": "noon"})
        with anyio.fail_after(20):
            await got.wait()
        assert seen[0].data == {"launch": "noon"}

        # a member whose certificate comes from another CA never gets a pipe
        stranger = f"tls+tcp://127.0.0.1:{port}?{rogue.query()}&role=node&connect_timeout=1"
        with pytest.raises(NoHubError):
            async with nanomitter.connect(stranger):
                pass

        # a plain TCP peer without TLS reads nothing and injects nothing
        with pynng.Bus0(recv_timeout=500) as plain:
            plain.dial(f"tcp://127.0.0.1:{port}", block=False)
            await member.emit("secret.plan", {"launch": "later"})
            with pytest.raises(pynng.Timeout):
                plain.recv()
            assert not plain.pipes
        with anyio.fail_after(20):
            await got_both.wait()  # the members still talk; the stranger saw none of it
        assert [e.data for e in seen] == [{"launch": "noon"}, {"launch": "later"}]
        assert hub.stats().decode_errors == 0


def test_tls_options_are_checked_up_front(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tls\\+tcp:// needs tls_cert, tls_key, tls_ca"):
        nanomitter.connect("tls+tcp://127.0.0.1:1")
    with pytest.raises(ValueError, match="tls_cert: no such file"):
        nanomitter.connect(
            f"tls+tcp://127.0.0.1:1?tls_ca={tmp_path}/none.pem&tls_cert={tmp_path}/c&tls_key=k"
        )
