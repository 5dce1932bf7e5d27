"""nanomitter.testing: the fixtures and helpers users test their own services with."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import msgspec
import pytest

import nanomitter
from nanomitter import DistributedEvent, DistributedEventEmitter, InvalidEventError, ListenerError
from nanomitter.testing import (
    Captured,
    ProblemLog,
    UnexpectedProblems,
    captured,
    connected,
    memory_url,
)

pytestmark = pytest.mark.anyio


# ------------------------------------------------------------------ an example service


class Order(msgspec.Struct):
    id: int
    ticker: str
    qty: int


class OrderDesk:
    """The kind of service a user tests: listens on one topic, answers on others."""

    def __init__(self, bus: DistributedEventEmitter) -> None:
        self.bus = bus
        bus.on("orders.placed", self.on_placed, type=Order)

    async def on_placed(self, event: DistributedEvent) -> None:
        order: Order = event.data
        if order.qty > 0:
            await self.bus.emit("orders.accepted", order)
        else:
            await self.bus.emit("orders.rejected", {"id": order.id, "reason": "qty must be > 0"})


async def test_service_under_test(
    nanomitter_bus: DistributedEventEmitter, nanomitter_url: str, nanomitter_problems: ProblemLog
) -> None:
    async with (
        nanomitter.connect(nanomitter_url, service="desk", on_error=nanomitter_problems) as desk,
        captured(nanomitter_bus, "orders.*") as seen,
    ):
        OrderDesk(desk)
        await nanomitter_bus.emit("orders.placed", {"id": 1, "ticker": "AAPL", "qty": 10})
        await nanomitter_bus.emit("orders.placed", {"id": 2, "ticker": "MSFT", "qty": 0})
        await seen.wait_for_count(4, timeout=5)

    # the test's own emits are captured too (echo=True), then the desk's answers in order
    assert seen.topics == ["orders.placed", "orders.placed", "orders.accepted", "orders.rejected"]
    assert seen.data[2:] == [
        {"id": 1, "ticker": "AAPL", "qty": 10},
        {"id": 2, "reason": "qty must be > 0"},
    ]
    assert {e.sender for e in seen.matching("orders.placed")} == {nanomitter_bus.id}
    assert {e.sender for e in seen.matching("orders.accepted")} == {desk.id}


async def test_service_rejects_malformed_orders(
    nanomitter_bus: DistributedEventEmitter, nanomitter_url: str, nanomitter_problems: ProblemLog
) -> None:
    async with (
        nanomitter.connect(nanomitter_url, on_error=nanomitter_problems) as desk,
        captured(nanomitter_bus, "orders.accepted") as accepted,
    ):
        OrderDesk(desk)
        await nanomitter_bus.emit("orders.placed", {"id": "one", "ticker": "AAPL", "qty": 1})
        await nanomitter_bus.emit("orders.placed", {"id": 2, "ticker": "AAPL", "qty": 1})
        await accepted.wait_for_count(1)  # the second order's answer; the first was skipped
    assert accepted.data == [{"id": 2, "ticker": "AAPL", "qty": 1}]
    [problem] = nanomitter_problems.take(InvalidEventError)
    assert "$.id" in str(problem)
    assert desk.stats().invalid == 1


# ------------------------------------------------------------------ fixtures and URLs


async def test_bus_fixture_is_open_on_the_url_fixture(
    nanomitter_bus: DistributedEventEmitter, nanomitter_url: str
) -> None:
    assert not nanomitter_bus.closed
    assert nanomitter_bus.transport.address == nanomitter_url
    assert nanomitter_url.startswith("memory://test_bus_fixture_is_open_on_the_url_fixture-")


def test_memory_urls_are_unique_and_carry_options() -> None:
    assert memory_url() != memory_url()
    url = memory_url("odd name/[x]", codec="none", capacity=8)
    assert re.fullmatch(r"memory://odd-name-x-\d+-[0-9a-f]{8}\?codec=none&capacity=8", url)


async def test_buses_of_different_tests_are_isolated(
    nanomitter_bus: DistributedEventEmitter,
) -> None:
    async with connected() as other, captured(nanomitter_bus) as seen:
        await other.emit("orders.placed", {"id": 1})
        await seen.assert_none()


async def test_memory_bus_serialises_like_production(nanomitter_url: str) -> None:
    async with connected(nanomitter_url) as bus:
        with pytest.raises(nanomitter.UnserializableDataError, match="not serialisable"):
            await bus.emit("orders.placed", {"when": object()})
        with pytest.raises(TypeError):  # UnserializableDataError is a TypeError
            await bus.emit("orders.placed", {1, 2, 3j})


async def test_codec_none_passes_objects_through() -> None:
    url = memory_url(codec="none")
    token = object()
    async with connected(url) as sender, connected(url) as receiver, captured(receiver) as seen:
        await sender.emit("thing", {"token": token})
        [event] = await seen.wait_for_count(1)
    assert event.data["token"] is token


# ------------------------------------------------------------------ captured


async def test_captured_records_topics_data_and_events(
    nanomitter_bus: DistributedEventEmitter,
) -> None:
    async with captured(nanomitter_bus, "stock.>") as seen:
        await nanomitter_bus.emit("stock.AAPL.price", 251.3)
        await nanomitter_bus.emit("weather", "rain")
        await nanomitter_bus.emit("stock.MSFT.price", 410.0)
        first = await seen.wait_for_count(1)
    assert [e.topic for e in first] == ["stock.AAPL.price"]
    assert seen.topics == ["stock.AAPL.price", "stock.MSFT.price"]
    assert seen.data == [251.3, 410.0]
    assert [e.seq for e in seen.events] == [1, 1]
    assert len(seen) == 2
    assert seen[1].topic == "stock.MSFT.price"
    assert [e.topic for e in seen] == seen.topics
    assert seen.matching("stock.MSFT.*") == [seen[1]]


async def test_captured_stops_recording_when_left(nanomitter_bus: DistributedEventEmitter) -> None:
    async with captured(nanomitter_bus, "a") as seen:
        assert nanomitter_bus.listener_count("a") == 1
    assert nanomitter_bus.listener_count("a") == 0
    await nanomitter_bus.emit("a", 1)
    assert seen.topics == []


async def test_wait_for_count_wakes_on_events_from_another_task(
    nanomitter_bus: DistributedEventEmitter, nanomitter_url: str
) -> None:
    async def produce(emitter: DistributedEventEmitter) -> None:
        for n in range(3):
            await emitter.emit("tick", n)

    async with (
        connected(nanomitter_url) as producer,
        captured(nanomitter_bus, "tick") as seen,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(produce, producer)
        await seen.wait_for_count(3)
    assert seen.data == [0, 1, 2]


async def test_wait_for_count_times_out_saying_what_arrived(
    nanomitter_bus: DistributedEventEmitter,
) -> None:
    async with captured(nanomitter_bus, "orders.>") as seen:
        await nanomitter_bus.emit("orders.placed", {"id": 1})
        with pytest.raises(TimeoutError, match=r"expected 2 event.*got 1: \[orders.placed="):
            await seen.wait_for_count(2, timeout=0.05)


async def test_wait_for_matches_past_and_future_events(
    nanomitter_bus: DistributedEventEmitter, nanomitter_url: str
) -> None:
    async with connected(nanomitter_url) as other, captured(nanomitter_bus, "orders.>") as seen:
        await nanomitter_bus.emit("orders.placed", {"id": 1})
        assert (await seen.wait_for("orders.placed")).data == {"id": 1}  # already here

        async def later() -> None:
            await other.emit("orders.placed", {"id": 2})
            await other.emit("orders.shipped", {"id": 2})

        async with anyio.create_task_group() as tg:
            tg.start_soon(later)
            second = await seen.wait_for(lambda e: e.data["id"] == 2)
            shipped = await seen.wait_for("orders.shipped")
    assert second.topic == "orders.placed"
    assert shipped.sender == other.id
    with pytest.raises(TimeoutError, match=r"expected an event on 'orders\.cancelled'"):
        await seen.wait_for("orders.cancelled", timeout=0.01)


async def test_wait_for_sees_events_after_clear(nanomitter_bus: DistributedEventEmitter) -> None:
    async with captured(nanomitter_bus) as seen:
        await nanomitter_bus.emit("a", 1)
        await nanomitter_bus.emit("b", 1)
        assert (await seen.wait_for("b")).topic == "b"
        seen.clear()

        async def later() -> None:
            await nanomitter_bus.emit("b", 2)

        async with anyio.create_task_group() as tg:
            tg.start_soon(later)
            assert (await seen.wait_for("b")).data == 2


async def test_assert_none(nanomitter_bus: DistributedEventEmitter) -> None:
    async with captured(nanomitter_bus, "alerts.>") as seen:
        await nanomitter_bus.emit("orders.placed", 1)
        await seen.assert_none()
        await nanomitter_bus.emit("alerts.price", 1)
        with pytest.raises(AssertionError, match=r"expected no event matching 'alerts.>', got 1"):
            await seen.assert_none()


async def test_assert_none_within_fails_as_soon_as_an_event_arrives(
    nanomitter_bus: DistributedEventEmitter, nanomitter_url: str
) -> None:
    async with connected(nanomitter_url) as other, captured(nanomitter_bus, "alerts.>") as seen:
        with anyio.fail_after(30):  # the window is 60 s: only an early failure ends it in time
            async with anyio.create_task_group() as tg:
                tg.start_soon(other.emit, "alerts.price", 1)
                with pytest.raises(AssertionError, match="got 1"):
                    await seen.assert_none(within=60)


async def test_typed_capture(
    nanomitter_bus: DistributedEventEmitter, nanomitter_problems: ProblemLog
) -> None:
    async with captured(nanomitter_bus, "orders.placed", type=Order) as seen:
        await nanomitter_bus.emit("orders.placed", {"id": 1, "ticker": "AAPL", "qty": 3})
        await nanomitter_bus.emit("orders.placed", {"id": 2, "ticker": "AAPL"})  # no qty
        await nanomitter_bus.emit("orders.placed", Order(3, "MSFT", 1))
        await seen.wait_for_count(2)
    orders: list[Order] = seen.data  # typed: Captured[Order]
    assert orders == [Order(1, "AAPL", 3), Order(3, "MSFT", 1)]
    [invalid] = nanomitter_problems.take(InvalidEventError)
    assert "qty" in invalid.detail


async def test_captured_on_a_url_joins_the_bus(
    nanomitter_bus: DistributedEventEmitter, nanomitter_url: str
) -> None:
    async with captured(nanomitter_url, "orders.>") as seen:
        await nanomitter_bus.emit("orders.placed", {"id": 1})
        await seen.wait_for_count(1)
    assert seen.senders == [nanomitter_bus.id]
    assert "orders.>" in repr(seen)


def test_captured_rejects_bad_patterns() -> None:
    with pytest.raises(ValueError, match="'>' may only be the last token"):
        captured("memory://x", "a.>.b")
    with pytest.raises(ValueError, match="count must be >= 0"):
        anyio.run(Captured[object]("a").wait_for_count, -1)


# ------------------------------------------------------------------ problems


async def test_connected_fails_on_unexpected_listener_errors() -> None:
    def broken(event: DistributedEvent) -> None:
        raise RuntimeError("boom in the listener")

    async def use_broken_listener() -> None:
        async with connected() as bus:
            bus.on("x", broken)
            await bus.emit("x", 1)

    with pytest.raises(UnexpectedProblems, match="ListenerError") as caught:
        await use_broken_listener()
    message = str(caught.value)
    assert "RuntimeError: boom in the listener" in message
    assert "in broken" in message  # the listener's traceback
    assert isinstance(caught.value.__cause__, ListenerError)


async def test_async_listener_errors_fail_the_test() -> None:
    started = anyio.Event()

    async def broken(event: DistributedEvent) -> None:
        started.set()
        raise RuntimeError("late boom")

    async def use_broken_listener() -> None:
        async with connected() as bus:
            bus.on("x", broken)
            await bus.emit("x", 1)  # the listener runs in its own task, after this
            await started.wait()

    with pytest.raises(UnexpectedProblems, match="late boom"):
        await use_broken_listener()


async def test_expected_problems_are_taken() -> None:
    problems = ProblemLog()

    def broken(event: DistributedEvent) -> None:
        raise RuntimeError("expected")

    async with connected(problems=problems) as bus:
        bus.on("x", broken)
        await bus.emit("x", 1)
        assert len(problems.problems) == 1
        assert problems.take(InvalidEventError) == []
        [error] = problems.take(ListenerError)
    assert isinstance(error.exception, RuntimeError)
    problems.assert_none()


def test_problem_log_reports_once() -> None:
    problems = ProblemLog()
    problems(ListenerError("t", print, ValueError("v")))
    assert "ListenerError" in repr(problems)
    with pytest.raises(UnexpectedProblems):
        problems.assert_none()
    problems.assert_none()  # already reported: not again
    assert list(problems) == []


# ------------------------------------------------------------------ as users get it


def test_module_imports_without_pytest() -> None:
    code = (
        "import sys; sys.modules['pytest'] = None\n"
        "import nanomitter.testing as t\n"
        "assert not hasattr(t, 'nanomitter_bus') and callable(t.captured)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


USER_TESTS = """
import pytest
from nanomitter.testing import captured

@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param

@pytest.mark.anyio
async def test_round_trip(nanomitter_bus):
    async with captured(nanomitter_bus, "greet.>") as seen:
        await nanomitter_bus.emit("greet.world", {"hi": 1})
        await seen.wait_for_count(1)
    assert seen.data == [{"hi": 1}]

@pytest.mark.anyio
async def test_listener_bug(nanomitter_bus):
    def broken(event):
        raise RuntimeError("user bug")
    nanomitter_bus.on("x", broken)
    await nanomitter_bus.emit("x", 1)

def test_url(nanomitter_url):
    assert nanomitter_url.startswith("memory://test_url-")
"""


def test_plugin_fixtures_need_no_import(tmp_path: Path) -> None:
    """A user's suite gets the fixtures from the entry point; a listener bug fails it."""
    (tmp_path / "test_user.py").write_text(textwrap.dedent(USER_TESTS))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            f"--rootdir={tmp_path}",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    output = result.stdout + result.stderr
    assert "5 passed, 2 errors" in output, output
    assert "ERROR at teardown of test_listener_bug[asyncio]" in output, output
    assert "ERROR at teardown of test_listener_bug[trio]" in output, output
    assert "RuntimeError: user bug" in output, output
