"""Request/reply and surveys in the core, on memory:// (asyncio and trio).

The conformance checks ``request_reply``, ``survey`` and ``requests_across_processes`` run
the same story on every transport; here are the details: every error and its message, the
counters, busy and hanging responders, the responder that misses a deadline, closing while a
request waits, the reserved topics, and what presence says about responders.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import msgspec
import pytest

import nanomitter
from nanomitter import (
    BusClosedError,
    DistributedEvent,
    DistributedEventEmitter,
    InvalidEventError,
    InvalidReplyError,
    ListenerError,
    NanomitterError,
    NoResponders,
    OverflowProblem,
    Problem,
    RemoteError,
    Reply,
    RequestTimeout,
)

pytestmark = pytest.mark.anyio
_names = itertools.count()

SLACK = 3.0
"""Seconds a failing request may take beyond its timeout (two busy cores, CI)."""
WAIT = 20.0
"""Seconds to wait for something that should happen (generous; nothing waits this long)."""

Bus = DistributedEventEmitter


class Quote(msgspec.Struct):
    ticker: str
    price: float


class Refused(Exception):
    pass


def fresh_url(options: str = "") -> str:
    return f"memory://requests-test-{next(_names)}{options}"


@pytest.fixture
async def trio_of_buses() -> AsyncIterator[tuple[Bus, Bus, Bus]]:
    """A (the requester, no service), B (service svc-b) and C (svc-c) on one memory bus."""
    url = fresh_url()
    async with (
        nanomitter.connect(url) as a,
        nanomitter.connect(url, service="svc-b") as b,
        nanomitter.connect(url, service="svc-c") as c,
    ):
        yield a, b, c


def responders_known(bus: Bus, topic: str) -> set[str]:
    return {peer.id for peer in bus.peers() if topic in peer.responds}


async def until(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Wait for ``condition`` (a state nothing signals: poll briefly) within ``timeout``."""
    with anyio.move_on_after(timeout):
        while not condition():  # noqa: ASYNC110 (polling a condition, not a fixed wait)
            await anyio.sleep(0.005)
    assert condition(), f"{what} did not happen within {timeout} s"


async def knows(bus: Bus, topic: str, *responders: Bus) -> None:
    """Wait until ``bus``'s presence lists each of ``responders`` as serving ``topic``."""
    ids = {r.id for r in responders}
    await until(lambda: responders_known(bus, topic) >= ids, f"knowing the {topic!r} responders")


async def elapsed(call: Awaitable[Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = await call
    return result, time.perf_counter() - started


class Gate:
    """An async responder that waits until released, counting the calls under way."""

    def __init__(self, answer: Any = "released") -> None:
        self.open = anyio.Event()
        self.started = 0
        self.finished = 0
        self.answer = answer
        self._changed = anyio.Event()

    async def __call__(self, event: DistributedEvent) -> Any:
        self.started += 1
        self._changed.set()
        await self.open.wait()
        self.finished += 1
        return self.answer

    async def wait_started(self, count: int) -> None:
        with anyio.fail_after(WAIT):
            while self.started < count:
                self._changed = anyio.Event()
                await self._changed.wait()


# ---------------------------------------------------------------------------- answering


async def test_request_gets_the_answer_and_the_event_fields(
    trio_of_buses: tuple[Bus, Bus, Bus],
) -> None:
    a, b, _ = trio_of_buses
    seen: list[DistributedEvent] = []

    @b.responder("price")
    def price(event: DistributedEvent) -> dict[str, Any]:
        seen.append(event)
        return {"ticker": event.data["ticker"], "price": 251.5}

    assert callable(price)  # the decorator returns the function
    reply = await a.request("price", {"ticker": "AAPL"})
    assert reply == {"ticker": "AAPL", "price": 251.5}
    [event] = seen
    assert (event.topic, event.data, event.sender, event.seq) == (
        "price",
        {"ticker": "AAPL"},
        a.id,
        0,  # request/reply traffic is unnumbered
    )


async def test_async_responders_and_pattern_topics(trio_of_buses: tuple[Bus, Bus, Bus]) -> None:
    a, b, c = trio_of_buses

    async def tail(event: DistributedEvent) -> str:
        await anyio.lowlevel.checkpoint()
        return f"tail:{event.topic}"

    b.responder("price.*", lambda event: f"one:{event.topic}")
    c.responder("stock.>", tail)
    await b.listening()
    await c.listening()
    assert await a.request("price.aapl") == "one:price.aapl"
    assert await a.request("stock.aapl.price") == "tail:stock.aapl.price"
    with pytest.raises(NoResponders):
        await a.request("price.aapl.extra", timeout=0.2)  # "*" is exactly one token


async def test_a_bare_star_responder_answers_every_topic() -> None:
    url = fresh_url()
    async with nanomitter.connect(url) as a, nanomitter.connect(url) as b:
        b.responder("*", lambda event: event.topic)
        assert await a.request("anything.at.all") == "anything.at.all"
        [reply] = await a.survey("x", timeout=WAIT, expect=1)
        assert (reply.data, reply.sender) == ("x", b.id)


@pytest.mark.parametrize("codec", ["json", "none"])
async def test_requests_work_with_every_memory_codec(codec: str) -> None:
    url = fresh_url(f"?codec={codec}")
    async with nanomitter.connect(url) as a, nanomitter.connect(url) as b:
        b.responder("q", lambda event: {"got": event.data}, type=None)
        assert await a.request("q", [1, "two"]) == {"got": [1, "two"]}
        replies = await a.survey("q", 3, timeout=WAIT, expect=1)
        assert [(r.data, r.sender) for r in replies] == [({"got": 3}, b.id)]


async def test_a_local_responder_answers_its_own_emitter_first() -> None:
    url = fresh_url()
    async with (
        nanomitter.connect(url, echo=False) as a,
        nanomitter.connect(url, service="svc-b") as b,
    ):
        a.responder("who", lambda event: "a")
        b.responder("who", lambda event: "b")
        await knows(a, "who", b)
        assert [await a.request("who") for _ in range(5)] == ["a"] * 5  # even with echo=False
        assert await b.request("who") == "b"
        assert a.stats().served == 5


async def test_requests_rotate_over_the_known_responders(
    trio_of_buses: tuple[Bus, Bus, Bus],
) -> None:
    a, b, c = trio_of_buses
    b.responder("svc", lambda event: "b")
    c.responder("svc", lambda event: "c")
    await knows(a, "svc", b, c)
    answers = [await a.request("svc") for _ in range(10)]
    assert sorted(answers) == ["b"] * 5 + ["c"] * 5  # round robin
    assert all(x != y for x, y in itertools.pairwise(answers))


async def test_a_requester_that_knows_no_responder_probes_first() -> None:
    """B sends no heartbeats (interval 0): A learns of it from the probe's answer."""
    url = fresh_url()
    async with (
        nanomitter.connect(url) as a,
        nanomitter.connect(url, service="svc-b", heartbeat_interval=0) as b,
    ):
        b.responder("svc", lambda event: "b")
        assert a.peers() == []
        assert await a.request("svc") == "b"
        [peer] = a.peers()
        assert (peer.id, peer.service, peer.responds) == (b.id, "svc-b", ("svc",))
        assert await a.request("svc") == "b"  # now without a probe
        assert a.stats().requests == 2  # probes are not counted


# ---------------------------------------------------------------------------- failures


async def test_remote_error_carries_the_responders_failure(
    trio_of_buses: tuple[Bus, Bus, Bus],
) -> None:
    a, b, _ = trio_of_buses
    problems: list[Problem] = []
    b.set_error_hook(problems.append)

    def fussy(event: DistributedEvent) -> str:
        if event.data == "bad":
            raise Refused("not today")
        return "ok"

    b.responder("fussy", fussy)
    with pytest.raises(RemoteError) as caught:
        await a.request("fussy", "bad")
    error = caught.value
    assert isinstance(error, NanomitterError)
    assert (error.topic, error.type, error.message) == ("fussy", "Refused", "not today")
    assert (error.responder, error.service) == (b.id, "svc-b")
    assert str(error) == f"service 'svc-b' ({b.id}) failed on 'fussy': Refused: not today"
    assert await a.request("fussy", "good") == "ok"  # it keeps serving
    [problem] = problems
    assert isinstance(problem, ListenerError)
    assert isinstance(problem.exception, Refused)
    assert problem.topic == "fussy"
    assert b.stats().listener_errors == 1


async def test_remote_error_without_a_service_names_the_responder_id() -> None:
    url = fresh_url()
    async with nanomitter.connect(url) as a, nanomitter.connect(url) as b:
        b.responder("boom", lambda event: 1 / 0)
        with pytest.raises(RemoteError, match=rf"^responder {b.id} failed on 'boom': Zero"):
            await a.request("boom")


async def test_a_local_responder_that_raises_gives_remote_error_too() -> None:
    async with nanomitter.connect(fresh_url(), on_error=lambda problem: None) as a:
        a.responder("boom", lambda event: 1 / 0)
        with pytest.raises(RemoteError) as caught:
            await a.request("boom")
        assert (caught.value.type, caught.value.responder) == ("ZeroDivisionError", a.id)
        assert a.stats().listener_errors == 1


async def test_typed_responder_converts_and_refuses_invalid_data(
    trio_of_buses: tuple[Bus, Bus, Bus],
) -> None:
    a, b, _ = trio_of_buses
    problems: list[Problem] = []
    b.set_error_hook(problems.append)
    got: list[Any] = []

    def quote(event: DistributedEvent) -> Quote:
        got.append(event.data)
        return Quote(event.data.ticker, event.data.price * 2)

    b.responder("quote", quote, type=Quote)
    assert await a.request("quote", {"ticker": "X", "price": 2}) == {"ticker": "X", "price": 4.0}
    assert got == [Quote("X", 2.0)]
    assert await a.request("quote", Quote("Y", 1.5), type=Quote) == Quote("Y", 3.0)
    with pytest.raises(RemoteError) as caught:
        await a.request("quote", {"ticker": "X", "price": "high"})
    assert caught.value.type == "ValidationError"
    assert "$.price" in caught.value.message
    assert b.stats().invalid == 1
    assert [type(p) for p in problems] == [InvalidEventError]
    assert len(got) == 2  # the responder was not called for invalid data


async def test_a_reply_that_does_not_convert_to_the_requested_type_raises() -> None:
    url = fresh_url()
    async with nanomitter.connect(url) as a, nanomitter.connect(url) as b:
        b.responder("quote", lambda event: {"ticker": "X"})
        with pytest.raises(InvalidReplyError) as caught:
            await a.request("quote", type=Quote)
        error = caught.value
        assert isinstance(error, ValueError)
        assert (error.topic, error.responder, error.expected) == ("quote", b.id, Quote)
        assert "price" in error.detail
        assert "'quote'" in str(error)
        assert "Quote" in str(error)


async def test_no_responders_names_the_topic_and_the_timeout(
    trio_of_buses: tuple[Bus, Bus, Bus],
) -> None:
    a, _, _ = trio_of_buses
    with pytest.raises(NoResponders) as caught:
        await a.request("nobody.here", timeout=0.3)
    error = caught.value
    assert isinstance(error, LookupError)
    assert isinstance(error, NanomitterError)
    assert error.topic == "nobody.here"
    message = str(error)
    assert "'nobody.here'" in message
    assert "within 0.3 s" in message
    assert "@bus.responder('nobody.here')" in message
    started = time.perf_counter()
    with pytest.raises(NoResponders):
        await a.request("nobody.here", timeout=0.3)
    took = time.perf_counter() - started
    assert 0.25 <= took < 0.3 + SLACK


async def test_request_timeout_names_topic_timeout_and_responder(
    trio_of_buses: tuple[Bus, Bus, Bus],
) -> None:
    a, b, _ = trio_of_buses
    gate = Gate()
    b.responder("slow", gate)
    await knows(a, "slow", b)
    started = time.perf_counter()
    with pytest.raises(RequestTimeout) as caught:
        await a.request("slow", timeout=0.3)
    took = time.perf_counter() - started
    assert 0.25 <= took < 0.3 + SLACK
    error = caught.value
    assert isinstance(error, TimeoutError)
    assert isinstance(error, NanomitterError)
    assert (error.topic, error.timeout) == ("slow", 0.3)
    assert (error.responder, error.service) == (b.id, "svc-b")
    message = str(error)
    assert "'slow'" in message
    assert "within 0.3 s" in message
    assert b.id in message
    gate.open.set()


async def test_a_late_reply_is_dropped_and_counted(trio_of_buses: tuple[Bus, Bus, Bus]) -> None:
    a, b, _ = trio_of_buses
    gate = Gate()
    b.responder("slow", gate)
    await knows(a, "slow", b)
    with pytest.raises(RequestTimeout):
        await a.request("slow", timeout=0.2)
    assert a.stats().late_replies == 0
    gate.open.set()
    await until(lambda: a.stats().late_replies == 1, "counting the late reply")
    assert gate.finished == 1
    assert b.stats().served == 1


async def test_a_late_local_reply_is_counted_too() -> None:
    async with nanomitter.connect(fresh_url()) as a:
        gate = Gate()
        a.responder("slow", gate)
        with pytest.raises(RequestTimeout) as caught:
            await a.request("slow", timeout=0.2)
        assert caught.value.responder == a.id  # its own responder was asked
        gate.open.set()
        await until(lambda: a.stats().late_replies == 1, "counting the late local reply")


async def test_a_busy_async_responder_answers_responder_busy(
    trio_of_buses: tuple[Bus, Bus, Bus],
) -> None:
    a, b, _ = trio_of_buses
    problems: list[Problem] = []
    b.set_error_hook(problems.append)
    gate = Gate("done")
    b.responder("busy", gate, concurrency=2)
    await knows(a, "busy", b)
    answers: list[Any] = []

    async def ask() -> None:
        answers.append(await a.request("busy", timeout=WAIT))

    async with anyio.create_task_group() as tg:
        tg.start_soon(ask)
        tg.start_soon(ask)
        await gate.wait_started(2)
        started = time.perf_counter()
        with pytest.raises(RemoteError) as caught:
            await a.request("busy", timeout=WAIT)
        assert time.perf_counter() - started < SLACK  # at once, not after the timeout
        assert caught.value.type == "ResponderBusy"
        assert "2 request" in caught.value.message  # names its concurrency limit
        assert b.stats().dropped == 1
        assert [type(p) for p in problems] == [OverflowProblem]
        gate.open.set()
    assert answers == ["done", "done"]
    assert await a.request("busy") == "done"  # free again
    assert gate.started == 3


async def test_a_reply_that_cannot_be_encoded_becomes_a_remote_error(
    trio_of_buses: tuple[Bus, Bus, Bus],
) -> None:
    a, b, _ = trio_of_buses
    problems: list[Problem] = []
    b.set_error_hook(problems.append)
    b.responder("odd", lambda event: {"when": object()})
    with pytest.raises(RemoteError) as caught:
        await a.request("odd")
    assert caught.value.message.startswith("the reply could not be sent: ")
    assert "not serialisable" in caught.value.message
    assert caught.value.responder == b.id
    assert b.stats().listener_errors == 1
    [problem] = problems
    assert isinstance(problem, ListenerError)
    [reply] = await a.survey("odd", timeout=WAIT, expect=1)
    assert reply.data is None
    assert reply.error is not None
    assert reply.error.message.startswith("the reply could not be sent: ")


async def test_request_data_that_cannot_be_encoded_raises_at_the_call_site(
    trio_of_buses: tuple[Bus, Bus, Bus],
) -> None:
    a, b, _ = trio_of_buses
    b.responder("svc", lambda event: "b")
    await knows(a, "svc", b)
    with pytest.raises(TypeError, match="not serialisable"):
        await a.request("svc", {"when": object()})
    with pytest.raises(TypeError, match="not serialisable"):
        await a.survey("svc", {"when": object()})
    assert await a.request("svc") == "b"  # nothing broke
    assert b.stats().served == 1


# ---------------------------------------------------------------------------- suspects


async def test_a_responder_that_misses_a_deadline_is_passed_over_until_heard_from(
    trio_of_buses: tuple[Bus, Bus, Bus],
) -> None:
    a, b, c = trio_of_buses
    gate = Gate("b")
    b.responder("svc", gate)
    c.responder("svc", lambda event: "c")
    await knows(a, "svc", b, c)
    answers: list[str] = []
    missed: list[RequestTimeout] = []
    for _ in range(2):  # round robin reaches B within two requests
        try:
            answers.append(await a.request("svc", timeout=0.3))
        except RequestTimeout as exc:
            missed.append(exc)
            break
    assert [exc.responder for exc in missed] == [b.id], f"B never asked (answers: {answers})"
    assert set(answers) <= {"c"}
    assert [await a.request("svc", timeout=WAIT) for _ in range(6)] == ["c"] * 6
    gate.open.set()  # B answers (late): A hears from it again
    await until(lambda: a.stats().late_replies == 1, "B's late reply")
    again = [await a.request("svc", timeout=WAIT) for _ in range(4)]
    assert sorted(again) == ["b", "b", "c", "c"]


async def test_all_responders_suspect_are_still_tried() -> None:
    url = fresh_url()
    async with nanomitter.connect(url) as a, nanomitter.connect(url, service="svc-b") as b:
        gate = Gate("b")
        b.responder("svc", gate)
        await knows(a, "svc", b)
        with pytest.raises(RequestTimeout):
            await a.request("svc", timeout=0.2)
        with pytest.raises(RequestTimeout):  # the only one: asked anyway, not NoResponders
            await a.request("svc", timeout=0.2)
        gate.open.set()
        assert await a.request("svc", timeout=WAIT) == "b"


async def test_heartbeats_do_not_clear_a_suspect() -> None:
    """A hung responder's process still heartbeats; only an answer brings it back."""
    url = fresh_url()
    async with (
        nanomitter.connect(url) as a,
        nanomitter.connect(url, heartbeat_interval=0.05) as b,
        nanomitter.connect(url, heartbeat_interval=0.05) as c,
    ):
        gate = Gate("b")
        b.responder("svc", gate)
        c.responder("svc", lambda event: "c")
        await knows(a, "svc", b, c)
        missed: list[RequestTimeout] = []
        for _ in range(3):
            try:
                assert await a.request("svc", timeout=0.3) == "c"
            except RequestTimeout as exc:
                missed.append(exc)
                break
        assert [exc.responder for exc in missed] == [b.id]
        seen = {peer.id: peer.last_seen for peer in a.peers()}
        await until(
            lambda: any(p.id == b.id and p.last_seen > seen[b.id] for p in a.peers()),
            "a heartbeat from B after its missed deadline",
        )
        assert [await a.request("svc", timeout=WAIT) for _ in range(6)] == ["c"] * 6


async def test_a_responder_that_stopped_serving_hands_over_to_another() -> None:
    """B removed its responder but A does not know yet (no heartbeats): B answers "not
    here" and A asks C within the same request, since B did not act on it."""
    url = fresh_url()
    async with (
        nanomitter.connect(url) as a,
        nanomitter.connect(url, heartbeat_interval=0) as b,
        nanomitter.connect(url, heartbeat_interval=0) as c,
    ):
        b.responder("svc", lambda event: "b")
        c.responder("svc", lambda event: "c")
        assert await a.request("svc", timeout=WAIT) in ("b", "c")  # a probe teaches A both
        await knows(a, "svc", b, c)
        assert b.off_responder("svc")
        assert [await a.request("svc", timeout=WAIT) for _ in range(6)] == ["c"] * 6
        assert c.off_responder("svc")
        with pytest.raises(NoResponders, match="stopped serving it"):
            await a.request("svc", timeout=WAIT)


# ---------------------------------------------------------------------------- registration


async def test_off_responder_then_requests_fail_with_no_responders(
    trio_of_buses: tuple[Bus, Bus, Bus],
) -> None:
    a, b, _ = trio_of_buses
    b.responder("svc", lambda event: "b")
    await knows(a, "svc", b)
    assert await a.request("svc") == "b"
    assert b.off_responder("svc") is True
    assert b.off_responder("svc") is False
    assert b.responders() == ()
    started = time.perf_counter()
    with pytest.raises(NoResponders):  # B says so at once, or A's probe finds nobody
        await a.request("svc", timeout=0.5)
    assert time.perf_counter() - started < 0.5 + SLACK
    await until(lambda: not responders_known(a, "svc"), "B announcing it serves nothing")
    assert [peer.responds for peer in a.peers() if peer.id == b.id] == [()]


async def test_a_responder_that_was_removed_says_so_at_once() -> None:
    """A believes B still serves the topic (B announces nothing: no heartbeats); B answers
    the request addressed to it with "no responder here", so A fails fast, not by timeout."""
    url = fresh_url()
    async with (
        nanomitter.connect(url) as a,
        nanomitter.connect(url, heartbeat_interval=0) as b,
    ):
        b.responder("svc", lambda event: "b")
        assert await a.request("svc") == "b"  # via a probe: A knows B now
        b.off_responder("svc")
        assert responders_known(a, "svc") == {b.id}
        with pytest.raises(NoResponders, match=rf"{b.id} stopped serving it"):
            await a.request("svc", timeout=WAIT)
        started = time.perf_counter()
        with pytest.raises(NoResponders):
            await a.request("svc", timeout=WAIT)
        assert time.perf_counter() - started < SLACK  # not the 20 s timeout


async def test_duplicate_responder_is_refused_and_can_be_replaced() -> None:
    async with nanomitter.connect(fresh_url()) as a:
        a.responder("svc", lambda event: 1)
        with pytest.raises(ValueError, match=r"already has a responder for 'svc'.*off_responder"):
            a.responder("svc", lambda event: 2)
        a.responder("svc.*", lambda event: 3)  # another pattern is fine
        assert a.responders() == ("svc", "svc.*")
        assert await a.request("svc") == 1
        assert a.off_responder("svc")
        a.responder("svc", lambda event: 4)
        assert a.responders() == ("svc.*", "svc")
        assert await a.request("svc") == 4


async def test_bad_arguments_raise_at_the_call_site(trio_of_buses: tuple[Bus, Bus, Bus]) -> None:
    a, _, _ = trio_of_buses
    for timeout in (0, -1.0):
        with pytest.raises(ValueError, match="timeout must be"):
            await a.request("x", timeout=timeout)
        with pytest.raises(ValueError, match="timeout must be"):
            await a.survey("x", timeout=timeout)
    with pytest.raises(ValueError, match="expect must be >= 1"):
        await a.survey("x", expect=0)
    with pytest.raises(ValueError, match="invalid topic"):
        await a.request("x.*")
    with pytest.raises(ValueError, match="invalid topic"):
        await a.survey("x.>")
    with pytest.raises(ValueError, match="invalid pattern"):
        a.responder("a.>.b", lambda event: None)
    with pytest.raises(ValueError, match="concurrency must be >= 1"):
        a.responder("x", lambda event: None, concurrency=0)
    with pytest.raises(TypeError, match="responder must be callable"):
        a.responder("x", "not callable")  # type: ignore[call-overload]
    assert a.responders() == ()
    assert a.stats().requests == 0


@pytest.mark.parametrize("topic", ["<?.x", "<??.x", "<!.x", "<!.abc.1", "<?"])
async def test_reserved_topics_are_refused(topic: str, trio_of_buses: tuple[Bus, Bus, Bus]) -> None:
    a, _, _ = trio_of_buses
    with pytest.raises(ValueError, match="request/reply"):
        await a.emit(topic, 1)
    with pytest.raises(ValueError, match="request/reply"):
        await a.emit({"topic": topic, "data": 1})
    with pytest.raises(ValueError, match="request/reply"):
        a.on(topic, print)
    with pytest.raises(ValueError, match="request/reply"):
        a.on(topic + ".>", print)
    with pytest.raises(ValueError, match="request/reply"):
        await a.request(topic)
    with pytest.raises(ValueError, match="request/reply"):
        await a.survey(topic)
    with pytest.raises(ValueError, match="request/reply"):
        a.responder(topic, lambda event: None)
    assert a.listener_count() == 0
    assert a.stats().emitted == 0


async def test_listeners_never_see_request_traffic(trio_of_buses: tuple[Bus, Bus, Bus]) -> None:
    a, b, c = trio_of_buses
    seen: list[str] = []
    for bus in (a, b, c):
        for pattern in ("*", ">"):
            bus.on(pattern, lambda event: seen.append(event.topic))
    b.responder("svc", lambda event: "b")
    c.responder("svc", lambda event: "c")
    c.responder("boom", lambda event: 1 / 0)
    c.set_error_hook(lambda problem: None)
    a.responder("mine", lambda event: "a")
    await knows(a, "svc", b, c)
    await knows(a, "boom", c)
    assert {await a.request("svc"), await a.request("svc")} == {"b", "c"}
    with pytest.raises(RemoteError):
        await a.request("boom")
    await a.request("mine")
    await a.survey("svc", timeout=WAIT, expect=2)
    with pytest.raises(NoResponders):
        await a.request("nobody", timeout=0.1)
    await a.emit("plain", 1)  # a fence: everything sent before it has been delivered
    await until(lambda: seen.count("plain") == 6, "the plain event reaching six listeners")
    assert [t for t in seen if t.startswith(("<?", "<!"))] == []


# ---------------------------------------------------------------------------- surveys


async def test_survey_collects_one_reply_per_emitter(trio_of_buses: tuple[Bus, Bus, Bus]) -> None:
    a, b, c = trio_of_buses
    a.responder("who", lambda event: {"me": "a", "data": event.data})
    b.responder("who", lambda event: {"me": "b", "data": event.data})
    b.responder("*", lambda event: {"me": "b-any"})  # also matches: B answers once, first one
    c.responder("who", lambda event: {"me": "c", "data": event.data})
    await b.listening()
    await c.listening()
    replies, took = await elapsed(a.survey("who", 7, timeout=WAIT, expect=3))
    assert took < WAIT / 2
    assert all(isinstance(reply, Reply) for reply in replies)
    assert sorted((r.sender, r.service, r.data["me"]) for r in replies) == sorted(
        [(a.id, "", "a"), (b.id, "svc-b", "b"), (c.id, "svc-c", "c")]
    )
    assert all(r.data["data"] == 7 and r.error is None for r in replies)
    with pytest.raises(dataclasses.FrozenInstanceError):
        replies[0].data = None
    replies, took = await elapsed(a.survey("who", timeout=0.4))
    assert len(replies) == 3
    assert took >= 0.35  # without expect it waits the whole timeout
    assert a.stats().requests == 2
    assert (a.stats().served, b.stats().served, c.stats().served) == (2, 2, 2)


async def test_survey_returns_early_with_expect(trio_of_buses: tuple[Bus, Bus, Bus]) -> None:
    a, b, c = trio_of_buses
    b.responder("who", lambda event: "b")
    c.responder("who", lambda event: "c")
    await b.listening()
    await c.listening()
    replies, took = await elapsed(a.survey("who", timeout=WAIT, expect=1))
    assert took < WAIT / 2
    assert 1 <= len(replies) <= 2


async def test_survey_reports_each_responders_failure(
    trio_of_buses: tuple[Bus, Bus, Bus],
) -> None:
    a, b, c = trio_of_buses
    b.set_error_hook(lambda problem: None)

    def refuse(event: DistributedEvent) -> None:
        raise Refused("no")

    b.responder("who", refuse)
    c.responder("who", lambda event: "c")
    replies = await a.survey("who", timeout=WAIT, expect=2)
    by_sender = {reply.sender: reply for reply in replies}
    failed = by_sender[b.id]
    assert failed.data is None
    assert isinstance(failed.error, RemoteError)
    assert (failed.error.type, failed.error.message, failed.error.service) == (
        "Refused",
        "no",
        "svc-b",
    )
    assert (by_sender[c.id].data, by_sender[c.id].error) == ("c", None)
    assert b.stats().listener_errors == 1


async def test_survey_nobody_serves_returns_nothing_after_the_timeout(
    trio_of_buses: tuple[Bus, Bus, Bus],
) -> None:
    a, _, _ = trio_of_buses
    replies, took = await elapsed(a.survey("nobody", timeout=0.3))
    assert replies == []
    assert 0.25 <= took < 0.3 + SLACK
    replies, _ = await elapsed(a.survey("nobody", timeout=0.1, expect=1))
    assert replies == []


async def test_survey_of_a_local_responder_alone() -> None:
    async with nanomitter.connect(fresh_url(), echo=False) as a:
        gate = Gate("a")
        a.responder("who", gate)

        async def release() -> None:
            await gate.wait_started(1)
            gate.open.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(release)
            [reply] = await a.survey("who", timeout=WAIT, expect=1)
        assert (reply.data, reply.sender) == ("a", a.id)


# ---------------------------------------------------------------------------- lifecycle


async def test_requests_before_open_and_after_close_raise_bus_closed() -> None:
    bus = nanomitter.connect(fresh_url())
    bus.responder("svc", lambda event: 1)  # registering before open is fine
    with pytest.raises(BusClosedError, match="not open yet"):
        await bus.request("svc")
    with pytest.raises(BusClosedError, match="not open yet"):
        await bus.survey("svc")
    async with bus:
        assert await bus.request("svc") == 1
    with pytest.raises(BusClosedError, match="closed"):
        await bus.request("svc")
    with pytest.raises(BusClosedError, match="closed"):
        await bus.survey("svc")
    with pytest.raises(BusClosedError, match="cannot add a responder"):
        bus.responder("other", lambda event: 2)


@pytest.mark.parametrize("where", ["remote", "local"])
async def test_a_waiting_request_is_woken_by_aclose(where: str) -> None:
    url = fresh_url()
    gate = Gate()
    outcome: list[BaseException] = []
    finished = anyio.Event()
    async with nanomitter.connect(url) as b, anyio.create_task_group() as tg:
        async with nanomitter.connect(url) as a:
            (b if where == "remote" else a).responder("hang", gate)

            async def ask(kind: str) -> None:
                try:
                    if kind == "request":
                        await a.request("hang", timeout=WAIT * 3)
                    else:
                        await a.survey("hang", timeout=WAIT * 3)
                except BusClosedError as exc:
                    outcome.append(exc)
                    if len(outcome) == 2:
                        finished.set()

            tg.start_soon(ask, "request")
            tg.start_soon(ask, "survey")
            await gate.wait_started(2)
            started = time.perf_counter()
            await a.aclose()
        with anyio.fail_after(WAIT):
            await finished.wait()
        assert time.perf_counter() - started < SLACK
        gate.open.set()
    assert [type(exc) for exc in outcome] == [BusClosedError, BusClosedError]
    assert all("closed while a request was waiting" in str(exc) for exc in outcome)


# ---------------------------------------------------------------------------- counters, presence


async def test_stats_count_requests_served_and_late_replies(
    trio_of_buses: tuple[Bus, Bus, Bus],
) -> None:
    a, b, c = trio_of_buses
    gate = Gate("slow")
    b.responder("svc", lambda event: "b")
    c.responder("slow", gate)
    await knows(a, "svc", b)
    await knows(a, "slow", c)
    for _ in range(3):
        await a.request("svc")
    await a.survey("svc", timeout=WAIT, expect=1)
    with pytest.raises(RequestTimeout):
        await a.request("slow", timeout=0.1)
    with pytest.raises(NoResponders):
        await a.request("nobody", timeout=0.1)
    gate.open.set()
    await until(lambda: a.stats().late_replies == 1, "the late reply")
    stats = a.stats()
    # 3 + the survey + the slow one; "nobody" never left (its probe found no responder)
    assert (stats.requests, stats.served, stats.late_replies) == (5, 0, 1)
    assert (b.stats().served, b.stats().requests) == (4, 0)
    assert c.stats().served == 1
    assert stats.emitted == 0  # requests are not emitted events
    assert stats.delivered == 0


async def test_peers_show_what_each_emitter_serves(trio_of_buses: tuple[Bus, Bus, Bus]) -> None:
    a, b, c = trio_of_buses
    b.responder("price", lambda event: 1)
    b.responder("stock.>", lambda event: 2)
    await until(
        lambda: {p.id: p.responds for p in a.peers()}.get(b.id) == ("price", "stock.>"),
        "A seeing B's responders",
    )
    assert {p.id: p.responds for p in a.peers()}[c.id] == ()
    assert b.responders() == ("price", "stock.>")


async def test_an_emitter_without_a_service_announces_its_responders() -> None:
    url = fresh_url()
    async with nanomitter.connect(url) as a, nanomitter.connect(url) as b:
        assert a.peers() == []  # no service, no responder: B sends no heartbeats
        b.responder("svc", lambda event: 1)
        await knows(a, "svc", b)
        [peer] = a.peers()
        assert (peer.service, peer.responds) == ("", ("svc",))
