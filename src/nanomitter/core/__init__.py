"""Bus semantics without I/O: emitter, topics, events, codecs, counters and errors."""

from .codecs import Codec, FrameDecoder, JsonCodec, MsgpackCodec, UnserializableDataError, get_codec
from .context import TransportContext
from .emitter import DistributedEventEmitter, new_sender_id
from .errors import (
    BusClosedError,
    ConnectionStateChanged,
    EventTooLargeError,
    FrameDecodeError,
    InvalidEventError,
    InvalidOptionError,
    InvalidReplyError,
    ListenerError,
    NanomitterError,
    NoResponders,
    OverflowProblem,
    PermissionDenied,
    Problem,
    RemoteError,
    RequestTimeout,
    ResponderError,
    UnknownOptionError,
    UnknownSchemeError,
)
from .event import DistributedEvent, Envelope
from .presence import Peer
from .requests import Reply
from .stats import Counters, Stats
from .subscription import Subscription
from .topics import ANY, PatternTrie, pattern_matches, validate_pattern, validate_topic

__all__ = [
    "ANY",
    "BusClosedError",
    "Codec",
    "ConnectionStateChanged",
    "Counters",
    "DistributedEvent",
    "DistributedEventEmitter",
    "Envelope",
    "EventTooLargeError",
    "FrameDecodeError",
    "FrameDecoder",
    "InvalidEventError",
    "InvalidOptionError",
    "InvalidReplyError",
    "JsonCodec",
    "ListenerError",
    "MsgpackCodec",
    "NanomitterError",
    "NoResponders",
    "OverflowProblem",
    "PatternTrie",
    "Peer",
    "PermissionDenied",
    "Problem",
    "RemoteError",
    "Reply",
    "RequestTimeout",
    "ResponderError",
    "Stats",
    "Subscription",
    "TransportContext",
    "UnknownOptionError",
    "UnknownSchemeError",
    "UnserializableDataError",
    "get_codec",
    "new_sender_id",
    "pattern_matches",
    "validate_pattern",
    "validate_topic",
]
