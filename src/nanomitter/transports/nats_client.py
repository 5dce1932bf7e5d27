"""The one place that reaches into nats-py's internals, for speed.

nats-py's public path costs more than the bus itself: ``publish(headers=...)`` builds and
regex-checks a header dict per message (137k msg/s here, against 800k for a prebuilt HPUB
command), and every received message becomes a ``Msg`` that goes through an asyncio queue
and a callback task (96k msg/s with headers, against 260k when the parsed frame is handed
over directly). So :class:`BusClient`, a nats-py ``Client``:

- receives: ``_process_msg`` (called by nats-py's parser with the raw subject, reply, payload
  and header bytes) hands frames of the bus's subscriptions to a sink, synchronously; other
  subscriptions (request inboxes, users' own) take nats-py's normal path;
- sends: :meth:`BusClient.queue_command` appends a prebuilt ``PUB``/``HPUB`` command to the
  client's pending buffer and wakes its flusher, the same two steps ``publish`` ends with.

Subscriptions are made with the public ``subscribe``, so nats-py still replays them after a
reconnect. tests/test_nats.py fails loudly if a nats-py release moves these internals.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from nats import errors as nats_errors
from nats.aio.client import Client
from nats.aio.subscription import Subscription

logger = logging.getLogger("nanomitter.nats")

Sink = Callable[[int, bytes, bytes, bytes, bytes], None]
"""``sink(sid, subject, reply, payload, headers)``; ``headers`` is b"" when there are none."""


class TlsRequiredError(nats_errors.Error):
    """A ``tls://`` member met a server that does not require TLS (a downgrade)."""


class BusClient(Client):
    """A nats-py client whose bus subscriptions bypass ``Msg`` objects and queues."""

    def __init__(self, *, require_tls: bool = False) -> None:
        super().__init__()
        self.sinks: dict[int, Sink] = {}
        """Subscription id -> the sink its messages go to."""
        self.require_tls = require_tls
        """Refuse a server whose INFO does not require TLS (nats-py would go on in clear)."""
        self.on_sink_error: Callable[[Exception, bytes, bytes], None] = _log_sink_error
        """Called with (exception, subject, payload) when a sink raises."""
        self.wait_for_room: Callable[[], Awaitable[None] | None] | None = None
        """After each bus message: an awaitable while the consumer is full (backpressure:
        nats-py's reader stops reading the socket until it resolves), else None."""

    async def _process_info(self, info: dict[str, Any], initial_connection: bool = False) -> None:
        # runs before nats-py decides on TLS and before CONNECT carries any credentials
        if initial_connection and self.require_tls and not info.get("tls_required"):
            raise TlsRequiredError(
                "the server does not offer TLS although the URL asks for it (tls:// or "
                "tls_* options); refusing to go on in clear, credentials included"
            )
        await super()._process_info(info, initial_connection)

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
    ) -> None:
        sink = self.sinks.get(sid)
        if sink is None:
            await super()._process_msg(sid, subject, reply, data, headers)  # type: ignore[arg-type]
            return
        stats = self.stats
        stats["in_msgs"] += 1
        stats["in_bytes"] += len(data)
        try:
            sink(sid, subject, reply, data, headers or b"")
        except Exception as exc:  # never into nats-py's read loop: it would stop reading
            self.on_sink_error(exc, subject, data)
        wait_for_room = self.wait_for_room
        if wait_for_room is not None:
            full = wait_for_room()
            if full is not None:
                await full

    async def subscribe_bus(self, subject: str, sink: Sink, *, queue: str = "") -> Subscription:
        """Subscribe ``subject`` with its messages going to ``sink`` from the first one on.

        The sink is in place before the ``SUB`` leaves (nats-py numbers subscriptions in
        order and nothing runs between reading the next number and subscribing).
        """
        sid = self._sid + 1
        self.sinks[sid] = sink
        try:
            subscription = await self.subscribe(subject, queue=queue)
        except BaseException:
            self.sinks.pop(sid, None)
            raise
        if subscription._id != sid:  # pragma: no cover - nats-py changed its numbering
            self.sinks.pop(sid, None)
            self.sinks[subscription._id] = sink
        return subscription

    async def unsubscribe_bus(self, subscription: Subscription) -> None:
        self.sinks.pop(subscription._id, None)
        await subscription.unsubscribe()

    def queue_command(self, command: bytes) -> Awaitable[Any] | None:
        """Queue a protocol command; None if queued, else an awaitable that flushes first.

        Only while connected or reconnecting (callers check :meth:`room_for` when not
        connected: nats-py keeps at most ``pending_size`` bytes for after the reconnect).
        """
        pending: list[bytes] = self._pending
        pending.append(command)
        self._pending_data_size += len(command)
        if 0 < self._max_pending_size < self._pending_data_size and self.is_connected:
            return self._flush_pending(force_flush=True)  # full: wait for the socket
        queue: asyncio.Queue[asyncio.Future[Any]] | None = self._flush_queue
        if queue is not None and queue.empty() and self.is_connected:
            queue.put_nowait(asyncio.get_running_loop().create_future())  # wake the flusher
        return None

    async def flush_in_order(self, seconds: float) -> None:
        """Return once the server has processed everything queued so far.

        nats-py's ``flush()`` writes its PING straight to the socket, ahead of commands
        still waiting in the pending buffer, so its PONG can come back before the server
        has seen an earlier ``SUB``. Writing the buffer out first restores the order.
        """
        if self.is_connected:
            await self._flush_pending(force_flush=True)
        await self.flush(timeout=max(1, round(seconds)))

    def room_for(self, size: int) -> bool:
        """Whether ``size`` more bytes fit the buffer kept while disconnected."""
        return self._pending_data_size + size <= self._max_pending_size

    def discard_pending(self) -> int:
        """Forget what waits for a server that is gone; returns how many events that was."""
        pending: list[bytes] = self._pending
        events = sum(1 for command in pending if command.startswith((b"PUB ", b"HPUB ")))
        self._pending = []
        self._pending_data_size = 0
        return events

    @property
    def pending_bytes(self) -> int:
        return int(self._pending_data_size)

    @property
    def max_payload(self) -> int:
        """The largest message body the server accepts (from its INFO)."""
        return int(self._max_payload)


def _log_sink_error(exc: Exception, subject: bytes, data: bytes) -> None:
    logger.error("dropped a message on %r that could not be handled: %r", subject, exc)
