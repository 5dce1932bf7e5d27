"""What several checks share: the hub-restart hook's type and a payload Struct."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec

RestartHub = Callable[[str], Awaitable[None]]
"""``await restart_hub(url)`` kills and restarts the hub, proxy or server behind ``url``."""


class Quote(msgspec.Struct):
    """The payload type of :func:`check_typed_validation`."""

    ticker: str
    price: float
