"""What an emitter hands its transport when it opens.

Defined in core, so the core never imports a transport module.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import anyio.lowlevel

from .codecs import Codec, FrameDecoder, Reporter
from .stats import Counters


@dataclass(frozen=True)
class TransportContext:
    """The emitter's identity and the sinks for counting and reporting problems."""

    sender: str
    service: str
    counters: Counters
    report: Reporter

    def decoder(self, codec: Codec, max_frame_bytes: int) -> FrameDecoder:
        """A frame decoder that counts and reports bad frames against this emitter."""
        return FrameDecoder(codec, self.counters, self.report, max_frame_bytes)


class _Yield:
    """Awaiting it yields to the event loop once; nothing is pending."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return anyio.lowlevel.checkpoint().__await__()

    def __repr__(self) -> str:
        return "YIELD"


YIELD = _Yield()
"""What ``send_nowait`` returns when the event was taken but the caller should yield soon
(a tight emit loop must not starve the receive loops). Unlike any other awaitable it may be
dropped unawaited: callers that cannot await right now (replies sent from the receive loop)
skip it."""
