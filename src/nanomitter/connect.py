"""``nanomitter.connect``: pick the transport from the URL and build an emitter on it."""

from __future__ import annotations

import os

from .core.codecs import Reporter
from .core.emitter import (
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_LISTENER_QUEUE,
    DistributedEventEmitter,
)
from .transports.registry import transport_from_url

DEFAULT_URL = "tcp://127.0.0.1:55555"
"""The seed's default: the first process binds and becomes the hub, later ones connect."""
URL_ENVIRONMENT_VARIABLE = "NANOMITTER_URL"


def default_url() -> str:
    """``$NANOMITTER_URL`` if set, else the seed's ``tcp://127.0.0.1:55555``."""
    return os.environ.get(URL_ENVIRONMENT_VARIABLE) or DEFAULT_URL


def connect(
    url: str | None = None,
    *,
    service: str = "",
    echo: bool = True,
    on_error: Reporter | None = None,
    listener_queue_size: int = DEFAULT_LISTENER_QUEUE,
    close_timeout: float = 5.0,
    heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
    **options: object,
) -> DistributedEventEmitter:
    """An emitter on the bus at ``url``; open it with ``async with``.

    ``url`` defaults to ``$NANOMITTER_URL``, then ``tcp://127.0.0.1:55555``. Keyword
    ``options`` are transport options, the same as URL query parameters
    (``connect("memory://x", codec="json")``); unknown ones raise an error listing the known.
    ``echo=True`` (Node's behaviour) delivers an emitter's own events to its own listeners;
    ``echo=False`` is the original nanomitter's behaviour. With a ``service`` name the
    emitter sends the original's heartbeat ``<3`` ``{"service": service}`` when it opens and
    every ``heartbeat_interval`` seconds (0 turns it off).
    """
    transport = transport_from_url(url if url is not None else default_url(), options)
    return DistributedEventEmitter(
        transport,
        service=service,
        echo=echo,
        on_error=on_error,
        listener_queue_size=listener_queue_size,
        close_timeout=close_timeout,
        heartbeat_interval=heartbeat_interval,
    )
