"""Transports: the contract, the scheme registry and the built-in backends.

Everything a transport written elsewhere needs is public here: the contract
(:class:`Transport`, :class:`Capabilities`, :class:`TransportContext`, :data:`MAX_BATCH`),
URL parsing (:class:`BusURL`), the registry, and the codec helpers (:func:`get_codec` for
encoding, the :class:`FrameDecoder` a context hands out for decoding, :func:`within_limit`
for the size limit). ``nanomitter.conformance.example`` is a complete transport built on
them alone.
"""

from ..core.codecs import (
    CODECS,
    DEFAULT_MAX_FRAME_BYTES,
    Codec,
    FrameDecoder,
    UnserializableDataError,
    get_codec,
    within_limit,
)
from .base import MAX_BATCH, BusURL, Capabilities, Transport, TransportContext
from .registry import known_schemes, register, transport_class, transport_from_url, unregister

__all__ = [
    "CODECS",
    "DEFAULT_MAX_FRAME_BYTES",
    "MAX_BATCH",
    "BusURL",
    "Capabilities",
    "Codec",
    "FrameDecoder",
    "Transport",
    "TransportContext",
    "UnserializableDataError",
    "get_codec",
    "known_schemes",
    "register",
    "transport_class",
    "transport_from_url",
    "unregister",
    "within_limit",
]
