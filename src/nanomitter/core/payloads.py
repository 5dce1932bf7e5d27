"""Payload codecs: the event's data alone, for transports that carry metadata out of band.

On NATS the topic is the subject and sender, sequence and content type travel in headers, so
the body is just ``data``: plain JSON by default, which any client in any language reads.
The ``Content-Type`` names the codec, so a receiver reads each message by what it says it is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from .codecs import UnserializableDataError


class PayloadCodec:
    """Encodes ``data`` to a message body and decodes a body back; built once per codec."""

    __slots__ = ("_decode", "_encode", "content_type", "name")

    def __init__(
        self,
        name: str,
        content_type: str,
        encoder: msgspec.json.Encoder | msgspec.msgpack.Encoder,
        decoder: msgspec.json.Decoder[Any] | msgspec.msgpack.Decoder[Any],
    ) -> None:
        self.name = name
        self.content_type = content_type
        self._encode = encoder.encode
        self._decode = decoder.decode

    def encode(self, topic: str, data: Any) -> bytes:
        """The body for ``data``; raises :class:`UnserializableDataError` naming ``topic``."""
        try:
            return self._encode(data)
        except (TypeError, ValueError, OverflowError, RecursionError, msgspec.EncodeError) as exc:
            raise UnserializableDataError(
                f"cannot emit on {topic!r}: data is not serialisable by the {self.name} codec "
                f"({exc}); send dicts, lists, str, int, float, bool, None or msgspec Structs"
            ) from exc

    def decode(self, body: bytes | memoryview) -> Any:
        """The data in ``body``; raises ``msgspec.DecodeError`` if it is not valid."""
        try:
            return self._decode(body)
        except RecursionError:  # msgspec recurses per nesting level of the data
            raise msgspec.DecodeError("data nested too deeply") from None

    def __repr__(self) -> str:
        return f"<PayloadCodec {self.name} {self.content_type}>"


def _json() -> PayloadCodec:
    return PayloadCodec("json", "application/json", msgspec.json.Encoder(), msgspec.json.Decoder())


def _msgpack() -> PayloadCodec:
    return PayloadCodec(
        "msgpack", "application/msgpack", msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder()
    )


PAYLOAD_CODECS: dict[str, Callable[[], PayloadCodec]] = {"json": _json, "msgpack": _msgpack}


def get_payload_codec(name: str) -> PayloadCodec:
    """The payload codec called ``name``; an unknown name raises ``ValueError`` listing them."""
    try:
        return PAYLOAD_CODECS[name]()
    except KeyError:
        raise ValueError(
            f"unknown codec {name!r}; known codecs: {', '.join(sorted(PAYLOAD_CODECS))}"
        ) from None


def by_content_type() -> dict[str, PayloadCodec]:
    """Every payload codec keyed by its content type (how receivers pick a decoder)."""
    codecs = (factory() for factory in PAYLOAD_CODECS.values())
    return {codec.content_type: codec for codec in codecs}
