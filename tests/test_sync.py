"""nanomitter.sync: the same emitter from plain threads."""

from __future__ import annotations

import threading

import pytest

import nanomitter
from nanomitter import DistributedEvent


def test_sync_emitters_share_a_bus_and_listeners_run_on_the_loop_thread() -> None:
    with (
        nanomitter.sync.connect("memory://sync-a") as a,
        nanomitter.sync.connect("memory://sync-a") as b,
    ):
        received: list[object] = []
        threads: set[str] = set()
        all_in = threading.Event()

        def listener(event: DistributedEvent) -> None:
            received.append(event.data)
            threads.add(threading.current_thread().name)
            if len(received) == 3:
                all_in.set()

        assert b.on("x.>", listener) is listener
        for n in range(3):
            a.emit("x.y", n)
        assert all_in.wait(20)
        assert received == [0, 1, 2]
        assert threading.current_thread().name not in threads
        assert b.stats().received == 3


def test_sync_wait_for_subscribe_and_errors() -> None:
    with (
        nanomitter.sync.connect("memory://sync-b") as a,
        nanomitter.sync.connect("memory://sync-b") as b,
    ):
        with pytest.raises(TimeoutError, match="'nothing'"):
            b.wait_for("nothing", timeout=0.05)
        with b.subscribe("z") as events:
            a.emit({"topic": "z", "data": 1})
            assert next(events).data == 1
        with pytest.raises(ValueError, match="invalid topic"):
            a.emit("z.*", 1)
        with pytest.raises(TypeError, match="not serialisable"):
            a.emit("z", object())
        seen: list[int] = []
        a.once("self", lambda e: seen.append(e.data))
        a.emit("self", 5)
        a.emit("self", 6)
        assert seen == [5]
    assert a.closed
    with pytest.raises(nanomitter.BusClosedError, match="closed"):
        a.emit("z", 1)


def test_background_thread_stops_with_the_last_emitter() -> None:
    before = set(threading.enumerate())
    bus = nanomitter.sync.connect("memory://sync-c")
    other = nanomitter.sync.connect("memory://sync-c")
    assert set(threading.enumerate()) - before  # the loop thread runs
    bus.close()
    other.emit("still", "running")
    other.close()
    other.close()  # idempotent
    assert set(threading.enumerate()) - before == set()


def test_request_survey_and_responder_from_plain_threads() -> None:
    with (
        nanomitter.sync.connect("memory://sync-requests", service="pricer") as server,
        nanomitter.sync.connect("memory://sync-requests") as client,
    ):

        @server.responder("price")
        def price(event: DistributedEvent) -> float:
            if event.data == "nope":
                raise KeyError(event.data)
            return 251.5

        assert client.request("price", "AAPL", timeout=5) == 251.5
        with pytest.raises(nanomitter.RemoteError, match="KeyError"):
            client.request("price", "nope", timeout=5)
        replies = client.survey("price", "AAPL", timeout=5, expect=1)
        assert [(r.data, r.service) for r in replies] == [(251.5, "pricer")]
        assert server.off_responder("price")
        with pytest.raises(nanomitter.NoResponders):
            client.request("price", "AAPL", timeout=0.5)
