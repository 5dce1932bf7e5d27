"""nanomitter: a distributed EventEmitter. ``bus.emit`` anywhere reaches ``bus.on`` everywhere.

async with nanomitter.connect("memory://demo") as bus:
    bus.on("stockprice", print)
    await bus.emit("stockprice", {"ticker": "AAPL", "price": 251.3})
"""

from . import sync
from .connect import DEFAULT_URL, connect, default_url
from .core import (
    BusClosedError,
    ConnectionStateChanged,
    DistributedEvent,
    DistributedEventEmitter,
    EventTooLargeError,
    FrameDecodeError,
    InvalidEventError,
    InvalidOptionError,
    InvalidReplyError,
    ListenerError,
    NanomitterError,
    NoResponders,
    OverflowProblem,
    Peer,
    PermissionDenied,
    Problem,
    RemoteError,
    Reply,
    RequestTimeout,
    ResponderError,
    Stats,
    Subscription,
    UnknownOptionError,
    UnknownSchemeError,
    UnserializableDataError,
)
from .transports import Capabilities, Transport, register

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_URL",
    "BusClosedError",
    "Capabilities",
    "ConnectionStateChanged",
    "DistributedEvent",
    "DistributedEventEmitter",
    "EventTooLargeError",
    "FrameDecodeError",
    "InvalidEventError",
    "InvalidOptionError",
    "InvalidReplyError",
    "ListenerError",
    "NanomitterError",
    "NoResponders",
    "OverflowProblem",
    "Peer",
    "PermissionDenied",
    "Problem",
    "RemoteError",
    "Reply",
    "RequestTimeout",
    "ResponderError",
    "Stats",
    "Subscription",
    "Transport",
    "UnknownOptionError",
    "UnknownSchemeError",
    "UnserializableDataError",
    "__version__",
    "connect",
    "default_url",
    "register",
    "sync",
]
