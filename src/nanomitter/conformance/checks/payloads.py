"""Payload sizes: small and large events arrive intact; one over the limit fails at ``emit``."""

from __future__ import annotations

import string
from typing import Any

from ...core.errors import EventTooLargeError
from ...core.event import DistributedEvent
from ..harness import Cluster, MakeURL, Node, describe_failure, fresh_url
from ..traffic import difference

LARGE = 64 * 1024
"""Bytes of data in the large event every transport must carry."""

MARGIN = 1024
"""Room left for the envelope below ``max_event_bytes`` in the largest event sent."""

_ALPHABET = string.ascii_letters + string.digits  # nothing any codec escapes


def body(size: int) -> str:
    """``size`` characters whose pattern shifts along the string (a lost chunk shows)."""
    width = len(_ALPHABET)
    chunks = (_ALPHABET[i % width :] + _ALPHABET[: i % width] for i in range(size // width + 1))
    return "".join(chunks)[:size]


def sized(size: int) -> dict[str, Any]:
    return {"size": size, "body": body(size)}


async def check_payload_sizes(make_url: MakeURL) -> None:
    """Rule 1 for every size: events with 1 B and 64 KiB of data, and (when the transport
    advertises ``max_event_bytes``) one that fills it up to 1 KiB, reach B and C intact.
    One byte of data over the limit must make ``emit`` raise ``EventTooLargeError`` naming
    it: never another exception, never a silent drop.
    """
    url, _ = fresh_url(make_url)
    cluster = Cluster(url)
    a, b, c = cluster.node("A"), cluster.node("B"), cluster.node("C", echo=False)
    got: dict[str, list[DistributedEvent]] = {b.name: [], c.name: []}
    for node in (b, c):

        def note(event: DistributedEvent, into: list[DistributedEvent] = got[node.name]) -> None:
            into.append(event)
            cluster.signal.pulse()

        node.bus.on("size.t", note)

    async with cluster:
        limit = a.bus.transport.max_event_bytes
        sizes = [1, LARGE]
        if limit is not None and limit - MARGIN > LARGE:
            sizes.append(limit - MARGIN)
        for size in sizes:
            try:
                await a.bus.emit("size.t", sized(size))
            except Exception as exc:
                raise AssertionError(
                    f"emit of an event with {size} bytes of data raised "
                    f"{describe_failure(exc)}; every event up to the transport's "
                    f"max_event_bytes ({limit}) must arrive intact"
                ) from exc
        for node in (b, c):
            await _expect_intact(cluster, node, got[node.name], sizes)
        if limit is not None:
            await _expect_refused(a, limit)


async def _expect_intact(
    cluster: Cluster, node: Node, events: list[DistributedEvent], sizes: list[int]
) -> None:
    def failure() -> str:
        arrived = [event.data.get("size") for event in events if isinstance(event.data, dict)]
        return f"node {node.name} got events of sizes {arrived}; A sent {sizes}"

    await cluster.signal.expect(lambda: len(events) >= len(sizes), failure)
    for size, event in zip(sizes, events, strict=False):
        wrong = difference(sized(size), event.data)
        if wrong is not None:
            shown = wrong if len(wrong) < 300 else wrong[:300] + "..."
            raise AssertionError(
                f"the {size}-byte event from node A reached node {node.name} changed: {shown}"
            )


async def _expect_refused(sender: Node, limit: int) -> None:
    over = limit + 1
    try:
        await sender.bus.emit("size.t", sized(over))
    except EventTooLargeError as exc:
        if str(limit) not in str(exc):
            raise AssertionError(
                f"EventTooLargeError for {over} bytes of data does not name the limit "
                f"({limit}): {exc}"
            ) from exc
        return
    except Exception as exc:
        raise AssertionError(
            f"emit of {over} bytes of data, over max_event_bytes ({limit}), raised "
            f"{describe_failure(exc)}; it must raise nanomitter.EventTooLargeError naming "
            "the limit"
        ) from exc
    raise AssertionError(
        f"emit of {over} bytes of data, over max_event_bytes ({limit}), returned normally; "
        "it must raise nanomitter.EventTooLargeError (an event nobody can receive must not "
        "be dropped silently)"
    )
