"""Codecs turn events into frames and back; the frame decoder guards the receive path.

Encoders and decoders are built once per codec (msgspec is fastest that way). A frame holds
one event or, when a transport coalesces under load, an array of events; decoders accept both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

import msgspec

from .errors import EventTooLargeError, FrameDecodeError, NanomitterError, Problem
from .event import DistributedEvent
from .stats import Counters

DEFAULT_MAX_FRAME_BYTES = 1024 * 1024
"""Frames larger than this are dropped unread and counted in ``decode_errors``; senders
refuse to send them (:func:`within_limit`)."""


def within_limit(frame: bytes, topic: str, max_frame_bytes: int) -> bytes:
    """``frame``, if receivers with this ``max_frame_bytes`` accept it; else raise
    :class:`EventTooLargeError` at ``emit``, before anything is sent."""
    if len(frame) > max_frame_bytes:
        raise EventTooLargeError(
            topic,
            len(frame),
            max_frame_bytes,
            "raise ?max_frame_bytes= in every member's URL, or send a reference to the data",
        )
    return frame


Frame = DistributedEvent | list[DistributedEvent]


class UnserializableDataError(NanomitterError, TypeError):
    """``emit`` was given data the bus codec cannot encode."""


class Codec:
    """Encodes events to bytes and decodes frames to events. Subclasses pick the format."""

    name: ClassVar[str]
    content_type: ClassVar[str]

    def __init__(
        self,
        encoder: msgspec.msgpack.Encoder | msgspec.json.Encoder,
        decoder: msgspec.msgpack.Decoder[Frame] | msgspec.json.Decoder[Frame],
    ) -> None:
        self._encode = encoder.encode
        self._decode = decoder.decode

    def encode(self, event: DistributedEvent) -> bytes:
        try:
            return self._encode(event)
        except (TypeError, ValueError, OverflowError, RecursionError, msgspec.EncodeError) as exc:
            raise _unserializable(self.name, event.topic, exc) from exc

    def encode_batch(self, events: Sequence[DistributedEvent]) -> bytes:
        try:
            return self._encode(events)
        except (TypeError, ValueError, OverflowError, RecursionError, msgspec.EncodeError) as exc:
            topic = events[0].topic if events else "?"
            raise _unserializable(self.name, topic, exc) from exc

    def decode(self, frame: bytes | memoryview) -> Frame:
        """Decode one frame; raises ``msgspec.DecodeError`` (or ``ValidationError``) if bad."""
        try:
            return self._decode(frame)
        except RecursionError:  # msgspec recurses per nesting level of the data
            raise msgspec.DecodeError("data nested too deeply") from None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def _unserializable(codec: str, topic: str, exc: BaseException) -> UnserializableDataError:
    return UnserializableDataError(
        f"cannot emit on {topic!r}: data is not serialisable by the {codec} codec ({exc}); "
        "send dicts, lists, str, int, float, bool, None, bytes or msgspec Structs"
    )


class MsgpackCodec(Codec):
    """msgpack maps (the original nanomitter's format); the default on every transport."""

    name = "msgpack"
    content_type = "application/msgpack"

    def __init__(self) -> None:
        super().__init__(msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder(Frame))


class JsonCodec(Codec):
    """JSON objects: human-readable frames for debugging and for peers without msgpack."""

    name = "json"
    content_type = "application/json"

    def __init__(self) -> None:
        super().__init__(msgspec.json.Encoder(), msgspec.json.Decoder(Frame))


CODECS: dict[str, Callable[[], Codec]] = {"msgpack": MsgpackCodec, "json": JsonCodec}


def get_codec(name: str) -> Codec:
    """Build the codec called ``name``; an unknown name raises ``ValueError`` listing them."""
    try:
        factory = CODECS[name]
    except KeyError:
        raise ValueError(
            f"unknown codec {name!r}; known codecs: {', '.join(sorted(CODECS))}"
        ) from None
    return factory()


Reporter = Callable[[Problem], None]


class FrameDecoder:
    """Decodes frames from the network without ever raising into the receive loop.

    Oversized or undecodable frames are dropped, counted in ``decode_errors`` and reported.
    """

    __slots__ = ("_counters", "_decode", "_report", "codec", "max_frame_bytes")

    def __init__(
        self,
        codec: Codec,
        counters: Counters,
        report: Reporter,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    ) -> None:
        self.codec = codec
        self._decode = codec.decode
        self._counters = counters
        self._report = report
        self.max_frame_bytes = max_frame_bytes

    def decode_into(self, frame: bytes | memoryview, out: list[DistributedEvent]) -> None:
        """Append the frame's event(s) to ``out``; count and report a bad frame instead."""
        if len(frame) > self.max_frame_bytes:
            self.reject(
                f"frame of {len(frame)} bytes exceeds the {self.max_frame_bytes}-byte limit "
                "(raise it with ?max_frame_bytes=)",
                bytes(frame[:32]),
            )
            return
        try:
            decoded = self._decode(frame)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self.reject(f"{self.codec.name}: {exc}", bytes(frame))
            return
        except RecursionError:
            self.reject(f"{self.codec.name}: data nested too deeply", bytes(frame[:32]))
            return
        if type(decoded) is list:
            out.extend(decoded)
        else:
            out.append(decoded)  # type: ignore[arg-type]

    def reject(self, reason: str, frame: bytes | None = None) -> None:
        """Count and report a frame that cannot be used."""
        self._counters.decode_errors += 1
        self._report(FrameDecodeError(reason, frame))
