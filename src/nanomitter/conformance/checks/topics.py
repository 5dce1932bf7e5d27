"""Rule 9: wildcards in ``emit`` and malformed topics or patterns fail at the call site."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ...core.event import DistributedEvent
from ..harness import (
    Cluster,
    MakeURL,
    Node,
    current_deadline,
    fresh_url,
)
from ..traffic import numbered

BAD_TOPICS = (
    "*",
    ">",
    "a.*",
    "a.>",
    "*.a",
    "a.*.b",
    "",
    ".",
    "a..b",
    ".a",
    "a.",
    "a b",
    "a\x00b",
    "a*",
    "a>b",
    "x" * 1025,
)
"""Topics ``emit`` must refuse with ``ValueError``."""


BAD_PATTERNS = (
    "a.>.b",
    ">.a",
    "a.>.>",
    "a*",
    "*a",
    "a.b*",
    "a.>x",
    "",
    "a..b",
    ".",
    "a.",
    "a b",
    "x" * 1025,
)
"""Patterns ``on``, ``once``, ``subscribe`` and ``wait_for`` must refuse with ``ValueError``."""


GOOD_PATTERNS = ("*", ">", "a", "a.*", "a.>", "*.b", "a.*.c", "*.*", "a.b.c")


async def check_invalid_topics(make_url: MakeURL) -> None:
    """Rule 9: no wildcard in ``emit``; invalid topics and patterns raise at the call site.

    Every topic in :data:`BAD_TOPICS` (also in the seed's ``{"topic": ...}`` form) must raise
    ``ValueError`` from ``emit`` on each of three emitters, before anything is sent; every
    pattern in :data:`BAD_PATTERNS` must raise ``ValueError`` from ``on``, ``once``,
    ``subscribe`` and ``wait_for`` without registering anything; valid patterns must work.
    """
    url, _ = fresh_url(make_url)
    cluster = Cluster(url)
    nodes = [cluster.node("A"), cluster.node("B"), cluster.node("C")]
    spies = {node.name: cluster.recorder(node, "*") for node in nodes}

    def noop(event: DistributedEvent) -> None:
        """A listener that must never get registered."""

    async with cluster:
        for node in nodes:
            emitted = node.bus.stats().emitted
            for topic in BAD_TOPICS:
                await _expect_value_error(
                    f"node {node.name}: emit({topic!r:.40})", node.bus.emit(topic, 1)
                )
                await _expect_value_error(
                    f"node {node.name}: emit({{'topic': {topic!r:.40}, ...}})",
                    node.bus.emit({"topic": topic, "data": 1}),
                )
            if node.bus.stats().emitted != emitted:
                raise AssertionError(
                    f"node {node.name}: stats().emitted changed after emits that raised; an "
                    "invalid topic must be refused before anything is sent"
                )
            listeners = node.bus.listener_count()
            for pattern in BAD_PATTERNS:
                shown = f"{pattern!r:.40}"
                _expect_value_error_now(f"on({shown}, fn)", node.bus.on, pattern, noop)
                _expect_value_error_now(f"once({shown}, fn)", node.bus.once, pattern, noop)
                await _expect_value_error(
                    f"wait_for({shown})", node.bus.wait_for(pattern, timeout=current_deadline())
                )
                await _expect_value_error(f"subscribe({shown})", _enter(node, pattern))
            if node.bus.listener_count() != listeners:
                raise AssertionError(
                    f"node {node.name}: listener_count() went from {listeners} to "
                    f"{node.bus.listener_count()} after registrations that raised"
                )
            for pattern in GOOD_PATTERNS:
                try:
                    node.bus.on(pattern, noop)
                except ValueError as exc:
                    raise AssertionError(
                        f"on({pattern!r}, fn) refused a valid pattern: {exc}"
                    ) from exc
                node.bus.off(pattern, noop)
        for node in nodes:
            await node.bus.emit("valid.t", numbered(node.name, 1))
        for node in nodes:
            spy = spies[node.name]
            await spy.expect(len(nodes), why="each node emitted one valid event")
            strays = [event.topic for event in spy.events if event.topic != "valid.t"]
            if strays:
                raise AssertionError(
                    f"{spy.label} received events on invalid topics {strays!r}: emit must "
                    "refuse them before sending"
                )


async def _expect_value_error(what: str, call: Awaitable[object]) -> None:
    try:
        await call
    except ValueError:
        return
    except Exception as exc:
        raise AssertionError(
            f"{what} raised {type(exc).__name__}: {exc}; invalid topics and patterns must "
            "raise ValueError"
        ) from exc
    raise AssertionError(f"{what} was accepted; it must raise ValueError at the call site")


def _expect_value_error_now(what: str, call: Callable[..., object], *args: object) -> None:
    try:
        call(*args)
    except ValueError:
        return
    except Exception as exc:
        raise AssertionError(
            f"{what} raised {type(exc).__name__}: {exc}; invalid patterns must raise ValueError"
        ) from exc
    raise AssertionError(f"{what} was accepted; it must raise ValueError at the call site")


async def _enter(node: Node, pattern: str) -> None:
    async with node.bus.subscribe(pattern):
        pass
