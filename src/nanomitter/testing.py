"""Helpers for unit-testing your own services with nanomitter, on the in-process bus.

Installing nanomitter registers this module as a pytest plugin (entry point ``pytest11``),
so these fixtures are available in every test suite without an import:

- ``nanomitter_url``: a fresh ``memory://`` URL per test, so tests never hear each other.
- ``nanomitter_problems``: a :class:`ProblemLog`; problems it holds at teardown fail the test.
- ``nanomitter_bus``: an emitter connected to ``nanomitter_url`` (async fixture: run the test
  with ``@pytest.mark.anyio``), reporting to ``nanomitter_problems``.

Outside fixtures (unittest, pytest-asyncio strict mode, scripts) use :func:`memory_url`,
:func:`connected` and :class:`ProblemLog` directly. :func:`captured` records the events that
match a pattern so a test can wait for them with a deadline instead of sleeping.

The module imports without pytest; only the fixtures need it.
"""

from __future__ import annotations

import itertools
import re
import traceback
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any, Generic, TypeVar, overload

import anyio
import anyio.lowlevel

from .connect import connect
from .core.emitter import DistributedEventEmitter
from .core.errors import ListenerError, Problem
from .core.event import DistributedEvent
from .core.topics import pattern_matches, validate_pattern

__all__ = [
    "DEFAULT_TIMEOUT",
    "Captured",
    "ProblemLog",
    "UnexpectedProblems",
    "captured",
    "connected",
    "memory_url",
]

T = TypeVar("T")
P = TypeVar("P", bound=Problem)

DEFAULT_TIMEOUT = 5.0
"""Seconds the ``wait_*`` helpers wait by default: generous for CI, still a hard deadline."""

_counter = itertools.count(1)
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def memory_url(hint: str = "test", **options: object) -> str:
    """A ``memory://`` URL no other test uses; ``hint`` goes into the name for debugging.

    ``options`` become query parameters, e.g. ``memory_url(codec="none")``.
    """
    name = _UNSAFE.sub("-", hint).strip("-.")[:60] or "test"
    url = f"memory://{name}-{next(_counter)}-{uuid.uuid4().hex[:8]}"
    if options:
        query = "&".join(f"{key}={_option_text(value)}" for key, value in options.items())
        url = f"{url}?{query}"
    return url


def _option_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# ---------------------------------------------------------------------- problems


class UnexpectedProblems(AssertionError):
    """The bus reported problems (a listener raised, data failed a type ...) nobody expected."""


class ProblemLog:
    """An error hook that keeps every reported problem, so a test can fail on them.

    Production's default hook only logs, so a listener that raises would let a test pass;
    pass a ProblemLog as ``on_error`` and call :meth:`assert_none` (the fixtures and
    :func:`connected` do it for you). Expected problems are removed with :meth:`take`.
    """

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def __call__(self, problem: Problem) -> None:
        self.problems.append(problem)

    # No __len__ on purpose: connect() tests ``on_error or default``, so an empty log
    # would be falsy and silently replaced by the logging hook.

    def __iter__(self) -> Iterator[Problem]:
        return iter(list(self.problems))

    @overload
    def take(self) -> list[Problem]: ...
    @overload
    def take(self, kind: type[P]) -> list[P]: ...

    def take(self, kind: type[Problem] = Problem) -> list[Any]:
        """Remove and return the problems of ``kind`` (all by default): they were expected."""
        taken = [p for p in self.problems if isinstance(p, kind)]
        self.problems = [p for p in self.problems if not isinstance(p, kind)]
        return taken

    def clear(self) -> None:
        self.problems.clear()

    def assert_none(self) -> None:
        """Raise :class:`UnexpectedProblems` listing what was reported, then forget it.

        Forgetting means a problem fails the test once, not again at every later check.
        """
        if not self.problems:
            return
        problems, self.problems = self.problems, []
        lines = [f"the bus reported {len(problems)} unexpected problem(s):"]
        for problem in problems:
            lines.append(f"  - {type(problem).__name__}: {problem}")
            if isinstance(problem, ListenerError):
                formatted = traceback.format_exception(problem.exception)
                lines.extend("      " + line for line in "".join(formatted).splitlines())
        lines.append("(if a test expects them, remove them first with problems.take(Kind))")
        raise UnexpectedProblems("\n".join(lines)) from problems[0]

    def __repr__(self) -> str:
        kinds = ", ".join(type(p).__name__ for p in self.problems)
        return f"<ProblemLog [{kinds}]>"


@asynccontextmanager
async def connected(
    url: str | None = None,
    *,
    problems: ProblemLog | None = None,
    **connect_options: Any,
) -> AsyncIterator[DistributedEventEmitter]:
    """``async with connected() as bus``: an open emitter on a private ``memory://`` bus.

    Every problem the emitter reports goes to ``problems`` (a fresh :class:`ProblemLog`
    if not given) and, once the block finishes without an exception and the emitter is
    closed (async listeners drained), any left raise :class:`UnexpectedProblems`.
    ``connect_options`` go to :func:`nanomitter.connect` (``echo``, ``service``, ...).
    """
    log = problems if problems is not None else ProblemLog()
    async with connect(url or memory_url(), on_error=log, **connect_options) as bus:
        yield bus
    log.assert_none()


# ---------------------------------------------------------------------- capturing


class Captured(Generic[T]):
    """Events that matched a pattern, in arrival order, and ways to wait for more.

    Filled by a sync listener, so nothing is queued or dropped on the way. ``T`` is the
    type of ``data`` (``Any`` unless :func:`captured` got ``type=``).
    """

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self._events: list[DistributedEvent] = []
        self._arrived: anyio.Event | None = None

    def record(self, event: DistributedEvent) -> None:
        """The listener :func:`captured` registers; wakes anyone waiting."""
        self._events.append(event)
        arrived, self._arrived = self._arrived, None
        if arrived is not None:
            arrived.set()

    @property
    def events(self) -> list[DistributedEvent]:
        """Every captured event (a copy: later arrivals do not change it)."""
        return list(self._events)

    @property
    def topics(self) -> list[str]:
        return [event.topic for event in self._events]

    @property
    def data(self) -> list[T]:
        return [event.data for event in self._events]

    @property
    def senders(self) -> list[str]:
        return [event.sender for event in self._events]

    def __len__(self) -> int:
        return len(self._events)

    def __iter__(self) -> Iterator[DistributedEvent]:
        return iter(list(self._events))

    def __getitem__(self, index: int) -> DistributedEvent:
        return self._events[index]

    def clear(self) -> None:
        """Forget what was captured (e.g. between the phases of a test)."""
        self._events.clear()

    def matching(self, pattern: str) -> list[DistributedEvent]:
        """The captured events whose topic matches ``pattern`` (a narrower one, usually)."""
        validate_pattern(pattern)
        return [event for event in self._events if pattern_matches(pattern, event.topic)]

    async def wait_for_count(
        self,
        count: int,
        timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 (same API as bus.wait_for)
    ) -> list[DistributedEvent]:
        """Wait until at least ``count`` events were captured; return the first ``count``.

        Raises ``TimeoutError`` after ``timeout`` seconds, saying what did arrive.
        """
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        await self._wait_until(
            lambda: len(self._events) >= count,
            timeout,
            lambda: f"expected {count} event(s)",
        )
        return self._events[:count]

    async def wait_for(
        self,
        match: str | Callable[[DistributedEvent], bool],
        timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 (same API as bus.wait_for)
    ) -> DistributedEvent:
        """The first captured event (already here or still to come) that ``match`` accepts.

        ``match`` is a topic pattern or a predicate, e.g. ``lambda e: e.data["id"] == 7``.
        Raises ``TimeoutError`` after ``timeout`` seconds.
        """
        accepts: Callable[[DistributedEvent], bool]
        if isinstance(match, str):
            pattern = validate_pattern(match)

            def on_pattern(event: DistributedEvent) -> bool:
                return pattern_matches(pattern, event.topic)

            accepts = on_pattern
            what = f"an event on {match!r}"
        else:
            accepts = match
            what = f"an event accepted by {getattr(match, '__qualname__', repr(match))}"
        found: list[DistributedEvent] = []
        scanned = 0

        def search() -> bool:
            nonlocal scanned
            events = self._events
            if scanned > len(events):  # cleared meanwhile
                scanned = 0
            while scanned < len(events):
                event = events[scanned]
                scanned += 1
                if accepts(event):
                    found.append(event)
                    return True
            return False

        await self._wait_until(search, timeout, lambda: f"expected {what}")
        return found[0]

    async def assert_none(
        self,
        within: float = 0.0,
    ) -> None:
        """Fail if anything was captured, or arrives in the next ``within`` seconds.

        Absence can only be shown over a window: ``within=0`` checks what already arrived
        (after one scheduling pass); a positive window fails as soon as an event arrives.
        Prefer waiting for a positive signal first (the service's reply to a later input),
        then calling this with ``within=0``.
        """
        await anyio.lowlevel.checkpoint()
        if within > 0 and not self._events:
            with anyio.move_on_after(within):
                while not self._events:
                    await self._next_arrival()
        if self._events:
            raise AssertionError(
                f"expected no event matching {self.pattern!r}, got {len(self._events)}: "
                f"{self._describe()}"
            )

    async def _wait_until(
        self, done: Callable[[], bool], seconds: float, expected: Callable[[], str]
    ) -> None:
        with anyio.move_on_after(seconds):
            while not done():
                await self._next_arrival()
            return
        raise TimeoutError(
            f"{expected()} matching {self.pattern!r} within {seconds} s; "
            f"got {len(self._events)}: {self._describe()}"
        )

    async def _next_arrival(self) -> None:
        if self._arrived is None:
            self._arrived = anyio.Event()
        await self._arrived.wait()

    def _describe(self, limit: int = 10) -> str:
        shown = ", ".join(f"{e.topic}={e.data!r}" for e in self._events[:limit])
        more = f", ... ({len(self._events) - limit} more)" if len(self._events) > limit else ""
        return f"[{shown}{more}]"

    def __repr__(self) -> str:
        return f"<Captured {self.pattern!r}: {self._describe(3)}>"


@overload
def captured(
    bus: DistributedEventEmitter | str, pattern: str = "*", *, type: None = None
) -> _CaptureContext[Any]: ...
@overload
def captured(
    bus: DistributedEventEmitter | str, pattern: str = "*", *, type: type[T]
) -> _CaptureContext[T]: ...
@overload
def captured(
    bus: DistributedEventEmitter | str, pattern: str = "*", *, type: Any
) -> _CaptureContext[Any]: ...


def captured(
    bus: DistributedEventEmitter | str, pattern: str = "*", *, type: Any = None
) -> _CaptureContext[Any]:
    """``async with captured(bus, "orders.>") as seen``: record matching events.

    ``bus`` is an emitter (with ``echo=True``, the default, its own events are captured
    too) or a bus URL, in which case a separate emitter joins the bus for the duration.
    ``type=`` converts ``data`` as a typed listener would; events that fail validation
    are not captured and are reported as :class:`nanomitter.InvalidEventError`.
    Recording starts when the block is entered and stops when it is left.
    """
    validate_pattern(pattern)
    return _CaptureContext(bus, pattern, type)


class _CaptureContext(Generic[T]):
    """The async context manager :func:`captured` returns (typed for mypy users)."""

    def __init__(self, bus: DistributedEventEmitter | str, pattern: str, type: Any) -> None:
        self._bus = bus
        self._pattern = pattern
        self._type = type
        self._own: DistributedEventEmitter | None = None
        self._captured: Captured[T] | None = None

    async def __aenter__(self) -> Captured[T]:
        bus = self._bus
        if isinstance(bus, str):
            self._own = bus = connect(bus, service="nanomitter.testing.captured")
            await bus.__aenter__()
        seen: Captured[T] = Captured(self._pattern)
        bus.on(self._pattern, seen.record, type=self._type)
        self._captured = seen
        return seen

    async def __aexit__(self, *exc_info: Any) -> None:
        seen, self._captured = self._captured, None
        bus = self._own or self._bus
        assert isinstance(bus, DistributedEventEmitter)
        assert seen is not None
        bus.off(self._pattern, seen.record)
        if self._own is not None:
            own, self._own = self._own, None
            await own.__aexit__(*exc_info)


# ---------------------------------------------------------------------- pytest fixtures

try:
    import pytest
except ImportError:  # pragma: no cover - the helpers above work without pytest
    _HAVE_PYTEST = False
else:
    _HAVE_PYTEST = True

if _HAVE_PYTEST:

    @pytest.fixture
    def nanomitter_url(request: pytest.FixtureRequest) -> str:
        """A ``memory://`` bus URL private to this test (named after it, for debugging)."""
        return memory_url(request.node.name)

    @pytest.fixture
    def nanomitter_problems() -> Iterator[ProblemLog]:
        """Problems reported on the bus; any left at teardown fail the test.

        ``nanomitter_bus`` reports here; pass it as ``on_error=`` to the emitters your
        service opens too. Remove expected ones with ``nanomitter_problems.take(Kind)``.
        """
        log = ProblemLog()
        yield log
        log.assert_none()

    @pytest.fixture
    async def nanomitter_bus(
        nanomitter_url: str, nanomitter_problems: ProblemLog
    ) -> AsyncIterator[DistributedEventEmitter]:
        """An open emitter on ``nanomitter_url``; closed (and checked) after the test."""
        async with connected(nanomitter_url, problems=nanomitter_problems) as bus:
            yield bus
