"""The emitter's API: registration, emit forms, errors at the call site, pull style, stats."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import anyio
import msgspec
import pytest

import nanomitter
from nanomitter import DistributedEvent, DistributedEventEmitter, Problem
from nanomitter.core.codecs import MsgpackCodec
from nanomitter.transports.base import BusURL, Transport, TransportContext
from peers import Recorder

pytestmark = pytest.mark.anyio
_names = itertools.count()


class Price(msgspec.Struct):
    ticker: str
    price: float


def fresh_url(options: str = "") -> str:
    return f"memory://emitter-test-{next(_names)}{options}"


@pytest.fixture
async def pair() -> AsyncIterator[tuple[DistributedEventEmitter, DistributedEventEmitter]]:
    url = fresh_url()
    async with nanomitter.connect(url) as a, nanomitter.connect(url) as b:
        yield a, b


async def test_on_returns_listener_and_works_as_decorator(
    pair: tuple[DistributedEventEmitter, DistributedEventEmitter],
) -> None:
    a, b = pair
    seen: list[object] = []

    @b.on("x")
    def listener(event: DistributedEvent) -> None:
        seen.append(event.data)

    recorder = Recorder()
    assert b.on("x", recorder) is recorder
    await a.emit("x", 1)
    await recorder.wait(1)
    assert seen == [1]


async def test_seed_emit_form_and_event_fields(
    pair: tuple[DistributedEventEmitter, DistributedEventEmitter],
) -> None:
    a, b = pair
    recorder = Recorder()
    b.on("stockprice", recorder)
    await a.emit({"topic": "stockprice", "data": {"ticker": "AAPL", "price": 250.5}})
    await a.emit("stockprice", {"ticker": "MSFT", "price": 1.0})
    first, second = await recorder.wait(2)
    assert first.data == {"ticker": "AAPL", "price": 250.5}
    assert (first.topic, first.sender, first.seq) == ("stockprice", a.id, 1)
    assert second.seq == 2
    with pytest.raises(AttributeError):
        first.topic = "other"


async def test_echo_delivers_own_events_inline_and_echo_false_does_not() -> None:
    url = fresh_url()
    async with nanomitter.connect(url) as node, nanomitter.connect(url, echo=False) as quiet:
        mine: list[object] = []
        node.on("t", lambda e: mine.append(e.data))
        await node.emit("t", 1)
        assert mine == [1]  # like Node: own sync listeners ran before emit returned
        silent: list[object] = []
        quiet.on("q", lambda e: silent.append(e.data))
        recorder = Recorder()
        node.on("q", recorder)
        await quiet.emit("q", 2)
        await recorder.wait(1)
        assert silent == []


async def test_once_off_and_remove_all(
    pair: tuple[DistributedEventEmitter, DistributedEventEmitter],
) -> None:
    a, _ = pair
    calls: list[str] = []

    def first(event: DistributedEvent) -> None:
        calls.append("first")

    def second(event: DistributedEvent) -> None:
        calls.append("second")

    a.once("t", first)
    a.on("t", second)
    a.on("other", second)
    await a.emit("t")
    await a.emit("t")
    assert calls == ["first", "second", "second"]
    assert a.off("t", second) is True
    assert a.off("t", second) is False
    await a.emit("t")
    assert calls == ["first", "second", "second"]
    assert a.listener_count() == 1
    assert a.remove_all_listeners() == 1
    assert a.patterns() == frozenset()


async def test_call_site_errors(
    pair: tuple[DistributedEventEmitter, DistributedEventEmitter],
) -> None:
    a, _ = pair
    with pytest.raises(ValueError, match=r"invalid topic 'stock\.\*'"):
        await a.emit("stock.*", 1)
    with pytest.raises(ValueError, match="empty token"):
        await a.emit("stock..price", 1)
    with pytest.raises(ValueError, match="invalid pattern"):
        a.on("a.>.b", print)
    with pytest.raises(TypeError, match="listener must be callable"):
        a.on("x", "not callable")  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="not serialisable by the msgpack codec"):
        await a.emit("x", {"when": object()})
    with pytest.raises(TypeError, match="takes a topic string"):
        await a.emit(42)  # type: ignore[arg-type]
    assert a.stats().emitted == 0  # nothing was sent for any of these


async def test_unserialisable_emit_does_not_consume_a_sequence_number(
    pair: tuple[DistributedEventEmitter, DistributedEventEmitter],
) -> None:
    a, b = pair
    recorder = Recorder()
    b.on("x", recorder)
    await a.emit("x", 1)
    with pytest.raises(TypeError):
        await a.emit("x", object())
    await a.emit("x", 2)
    events = await recorder.wait(2)
    assert [e.seq for e in events] == [1, 2]
    assert b.stats().lost == 0


async def test_emit_before_open_and_after_close() -> None:
    bus = nanomitter.connect(fresh_url())
    with pytest.raises(nanomitter.BusClosedError, match="not open yet"):
        await bus.emit("x", 1)
    async with bus:
        pass
    with pytest.raises(nanomitter.BusClosedError, match="closed"):
        await bus.emit("x", 1)
    with pytest.raises(nanomitter.BusClosedError, match="opened once"):
        await bus.__aenter__()


async def test_wait_for_returns_event_or_raises_builtin_timeout(
    pair: tuple[DistributedEventEmitter, DistributedEventEmitter],
) -> None:
    a, b = pair
    with pytest.raises(TimeoutError, match=r"'ready'.*0\.05 s"):
        await b.wait_for("ready", timeout=0.05)
    assert b.listener_count() == 0  # the temporary listener is gone

    async def announce() -> None:
        await a.emit("ready", {"service": "a"})

    async with anyio.create_task_group() as tg:
        tg.start_soon(announce)
        event = await b.wait_for("ready", timeout=20)
    assert event.data == {"service": "a"}


async def test_subscribe_pull_style(
    pair: tuple[DistributedEventEmitter, DistributedEventEmitter],
) -> None:
    a, b = pair
    async with b.subscribe("stock.>") as events:
        for n in range(3):
            await a.emit(f"stock.t{n}", n)
        await a.emit("other", 99)
        received = []
        with anyio.fail_after(20):
            async for event in events:
                received.append(event.data)
                if len(received) == 3:
                    break
    assert received == [0, 1, 2]
    assert b.listener_count() == 0


async def test_typed_listener_converts_and_skips_invalid(
    pair: tuple[DistributedEventEmitter, DistributedEventEmitter],
) -> None:
    a, b = pair
    problems: list[Problem] = []
    b.set_error_hook(problems.append)
    typed = Recorder()
    untyped = Recorder()
    b.on("price", typed, type=Price)
    b.on("price", untyped)
    await a.emit("price", {"ticker": "AAPL", "price": "cheap"})
    await a.emit("price", Price("MSFT", 1.5))
    await untyped.wait(2)
    await typed.wait(1)
    assert typed.data == [Price("MSFT", 1.5)]
    assert b.stats().invalid == 1
    (problem,) = problems
    assert isinstance(problem, nanomitter.InvalidEventError)
    assert "$.price" in str(problem) and "Price" in str(problem)


async def test_typed_listener_on_own_struct_event() -> None:
    async with nanomitter.connect(fresh_url()) as bus:
        seen: list[object] = []
        bus.on("price", lambda e: seen.append(e.data), type=Price)
        await bus.emit("price", Price("AAPL", 2.0))
        await bus.emit("price", {"ticker": "AAPL", "price": 3.0})
        assert seen == [Price("AAPL", 2.0), Price("AAPL", 3.0)]


async def test_listener_errors_are_isolated_and_reported() -> None:
    problems: list[Problem] = []
    both_reported = anyio.Event()

    def hook(problem: Problem) -> None:
        problems.append(problem)
        if len(problems) == 2:
            both_reported.set()

    async with nanomitter.connect(fresh_url(), on_error=hook) as bus:
        seen: list[str] = []

        def broken(event: DistributedEvent) -> None:
            raise RuntimeError("boom")

        async def broken_async(event: DistributedEvent) -> None:
            raise KeyError("async boom")

        done = anyio.Event()
        bus.on("t", broken)
        bus.on("t", broken_async)
        bus.on("t", lambda e: seen.append("after"))
        bus.on("t", lambda e: done.set())
        await bus.emit("t")
        with anyio.fail_after(20):
            await done.wait()
            await both_reported.wait()
        assert bus.stats().listener_errors == 2
        assert seen == ["after"]
        kinds = sorted(type(p.__cause__).__name__ for p in problems)
        assert kinds == ["KeyError", "RuntimeError"]
        assert all(isinstance(p, nanomitter.ListenerError) for p in problems)


async def test_broken_error_hook_does_not_break_dispatch() -> None:
    def bad_hook(problem: Problem) -> None:
        raise RuntimeError("hook is broken")

    async with nanomitter.connect(fresh_url(), on_error=bad_hook) as bus:
        seen: list[int] = []
        bus.on("t", lambda e: 1 / 0)
        bus.on("t", lambda e: seen.append(1))
        await bus.emit("t")
        assert seen == [1]
        assert bus.stats().listener_errors == 1


async def test_slow_async_listener_overflows_into_dropped_without_blocking_others() -> None:
    problems: list[Problem] = []
    url = fresh_url()
    async with (
        nanomitter.connect(url) as sender,
        nanomitter.connect(url, listener_queue_size=4, on_error=problems.append) as node,
    ):
        release = anyio.Event()
        slow_seen: list[int] = []
        slow_done = anyio.Event()

        async def slow(event: DistributedEvent) -> None:
            await release.wait()
            slow_seen.append(event.data)
            if event.data == 19 or len(slow_seen) == 20 - node.stats().dropped:
                slow_done.set()

        fast = Recorder()
        node.on("t", slow)
        node.on("t", fast)
        for n in range(20):
            await sender.emit("t", n)
        await fast.wait(20)
        stats = node.stats()
        assert stats.dropped >= 15  # 1 in flight + 4 queued at most
        assert any(isinstance(p, nanomitter.OverflowProblem) for p in problems)
        release.set()
        with anyio.fail_after(20):
            await slow_done.wait()
        assert len(slow_seen) == 20 - stats.dropped
        assert slow_seen == sorted(slow_seen)  # what was kept stays in order


async def test_gaps_duplicates_and_own_echoes_are_counted() -> None:
    url = fresh_url()
    codec = MsgpackCodec()
    async with nanomitter.connect(url) as injector, nanomitter.connect(url) as node:
        recorder = Recorder()
        node.on("t", recorder)

        def frame(seq: int, sender: str = "peer-1") -> bytes:
            return codec.encode(DistributedEvent(topic="t", data=seq, sender=sender, seq=seq))

        for seq in (1, 2, 5, 6, 4):  # 3 and 4 missing at first; 4 arrives late
            await injector.transport.send_raw(frame(seq))
        await injector.transport.send_raw(frame(1, sender=node.id))  # a hub echoing us back
        await injector.transport.send_raw(frame(9, sender="peer-2"))  # first sight: no loss
        await recorder.wait(6)
        stats = node.stats()
        assert (stats.lost, stats.reordered, stats.own_echoes) == (2, 1, 1)
        assert stats.received == 6


async def test_garbage_from_the_network_is_counted_and_traffic_continues() -> None:
    url = fresh_url()
    async with nanomitter.connect(url) as a, nanomitter.connect(url) as b:
        recorder = Recorder()
        b.on("t", recorder)
        await a.transport.send_raw(b"\xc1 not msgpack")
        await a.transport.send_raw(MsgpackCodec().encode(DistributedEvent(topic="a.*", data=1)))
        await a.emit("t", "still works")
        await recorder.wait(1)
        assert b.stats().decode_errors == 2


async def test_json_and_none_codecs(anyio_backend: str) -> None:
    for options in ("?codec=json", "?codec=none"):
        url = fresh_url(options)
        async with nanomitter.connect(url) as a, nanomitter.connect(url) as b:
            recorder = Recorder()
            b.on("t", recorder)
            payload = {"n": [1, 2.5, "x", None, True]}
            await a.emit("t", payload)
            (event,) = await recorder.wait(1)
            assert event.data == payload


async def test_codec_none_skips_serialisation_check() -> None:
    async with nanomitter.connect(fresh_url("?codec=none")) as bus:
        await bus.emit("t", object())  # documented opt-out: objects are passed as they are


async def test_memory_bus_cannot_span_event_loops() -> None:
    url = fresh_url()
    async with nanomitter.connect(url):

        def other_loop() -> None:
            async def join() -> None:
                async with nanomitter.connect(url):
                    pass

            anyio.run(join)

        with pytest.raises(RuntimeError, match="in use by another event loop"):
            await anyio.to_thread.run_sync(other_loop)


async def test_repr_and_stats_snapshot(
    pair: tuple[DistributedEventEmitter, DistributedEventEmitter],
) -> None:
    a, _ = pair
    assert a.id in repr(a) and "MemoryTransport" in repr(a)
    before = a.stats()
    await a.emit("x")
    assert before.emitted == 0 and a.stats().emitted == 1


async def test_exceptions_in_the_block_propagate_ungrouped() -> None:
    with pytest.raises(KeyError, match="mine"):
        async with nanomitter.connect(fresh_url()):
            raise KeyError("mine")


async def test_once_with_async_listener_is_called() -> None:
    async with nanomitter.connect(fresh_url()) as bus:
        got = anyio.Event()
        seen: list[object] = []

        async def once_async(event: DistributedEvent) -> None:
            seen.append(event.data)
            got.set()

        bus.once("t", once_async)
        await bus.emit("t", 1)
        await bus.emit("t", 2)
        with anyio.fail_after(20):
            await got.wait()
        assert bus.listener_count() == 0
    assert seen == [1]
    assert bus.stats().dropped == 0


async def test_invalid_data_does_not_use_up_a_typed_once_or_wait_for(
    pair: tuple[DistributedEventEmitter, DistributedEventEmitter],
) -> None:
    a, b = pair
    b.set_error_hook(lambda problem: None)
    seen: list[object] = []
    b.once("price", lambda e: seen.append(e.data), type=Price)
    await a.emit("price", {"ticker": 1})
    await a.emit("price", {"ticker": "A", "price": 1.0})
    event = await b.wait_for("price", timeout=20, type=Price)
    assert event.data == Price("A", 1.0)
    assert seen == [Price("A", 1.0)]


async def test_subscription_iteration_ends_when_the_emitter_closes() -> None:
    bus = nanomitter.connect(fresh_url())
    received: list[object] = []
    async with bus, bus.subscribe("t") as events:
        await bus.emit("t", 1)

        async def close_soon() -> None:
            await bus.aclose()

        async with anyio.create_task_group() as tg:
            tg.start_soon(close_soon)
            with anyio.fail_after(20):
                async for event in events:  # ends instead of hanging
                    received.append(event.data)
    assert received == [1]


async def test_any_hook_object_is_used_even_if_falsy() -> None:
    class EmptyLog(list[Problem]):
        def __call__(self, problem: Problem) -> None:
            self.append(problem)

    log = EmptyLog()
    async with nanomitter.connect(fresh_url(), on_error=log) as bus:
        bus.on("t", lambda e: 1 / 0)
        await bus.emit("t")
    assert len(log) == 1


async def test_async_listener_queued_before_close_is_drained() -> None:
    """Events queued for an async listener whose task has not run yet still reach it."""
    seen: list[object] = []

    async def listener(event: DistributedEvent) -> None:
        seen.append(event.data)

    async with nanomitter.connect(fresh_url()) as bus:
        bus.on("t", listener)
        await bus.emit("t", 1)
    assert seen == [1]
    assert bus.stats().dropped == 0


class LateBatch(Transport):
    """Hands over one batch only as it closes: the worst case of a batch read just before
    ``aclose`` and returned after it (nng and ZeroMQ checkpoint between the two)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.closing = anyio.Event()
        self.handed_over = False

    @classmethod
    def from_url(cls, url: BusURL) -> LateBatch:
        raise NotImplementedError

    async def open(self, context: TransportContext) -> None:
        pass

    async def send(self, event: DistributedEvent) -> None:
        pass

    async def receive(self) -> list[DistributedEvent]:
        if self.handed_over:
            raise anyio.EndOfStream
        await self.closing.wait()
        await anyio.lowlevel.checkpoint()
        self.handed_over = True
        return [
            DistributedEvent(topic="t", data=n, sender="peer", seq=n + 1) for n in range(self.count)
        ]

    async def aclose(self) -> None:
        self.closing.set()
        await anyio.lowlevel.checkpoint()


async def test_a_batch_handed_over_during_close_reaches_every_listener() -> None:
    """The async listeners stop taking events only after the receive loop has ended, so the
    batch reaches them too, not the sync listeners alone (it once vanished silently)."""
    transport = LateBatch(300)
    sync_seen: list[object] = []
    async_seen: list[object] = []

    async def listener(event: DistributedEvent) -> None:
        async_seen.append(event.data)

    async with DistributedEventEmitter(transport, heartbeat_interval=0) as bus:
        bus.on("t", lambda event: sync_seen.append(event.data))
        bus.on("t", listener)
    assert transport.handed_over
    assert sync_seen == list(range(300))
    assert async_seen == list(range(300))
    assert bus.stats().dropped == 0


class DeafToClose(LateBatch):
    """Breaks the contract: its ``receive`` waits forever, even after ``aclose``."""

    async def receive(self) -> list[DistributedEvent]:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")


async def test_a_transport_that_does_not_end_receive_on_close_is_named() -> None:
    """The close waits a bounded time for the receive loop, then goes on and says which
    transport broke the contract (rather than hanging, or half-delivering silently)."""
    problems: list[Problem] = []
    with anyio.fail_after(30):
        async with DistributedEventEmitter(
            DeafToClose(0), heartbeat_interval=0, on_error=problems.append
        ):
            pass
    [problem] = problems
    assert "DeafToClose.receive() had not ended" in str(problem)
    assert "wake a parked receive()" in str(problem)


async def test_fast_async_listener_keeps_up_with_a_burst_without_drops() -> None:
    """A burst larger than the listener queue must not overflow a listener that keeps up:
    transports hand over at most MAX_BATCH events at a time, smaller than the queue."""
    url = fresh_url()
    count = 20_000
    async with nanomitter.connect(url) as sender, nanomitter.connect(url) as node:
        done = anyio.Event()
        seen = [0]

        async def fast(event: DistributedEvent) -> None:
            seen[0] += 1
            if seen[0] == count:
                done.set()

        node.on("t", fast)
        for n in range(count):
            await sender.emit("t", n)
        with anyio.fail_after(60):
            await done.wait()
        assert node.stats().dropped == 0


async def test_listening_needs_an_open_emitter_and_is_immediate_on_memory() -> None:
    bus = nanomitter.connect(fresh_url())
    with pytest.raises(nanomitter.BusClosedError, match="not open yet"):
        await bus.listening()
    async with bus:
        bus.on("t", print)
        with anyio.fail_after(1):
            await bus.listening()
