"""What an emitter hands its transport when it opens.

Defined in core, so the core never imports a transport module.
"""

from __future__ import annotations

from dataclasses import dataclass

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
