"""Maps URL schemes to transport classes: built-ins, plugins and runtime registrations.

Built-in transports are imported only when their scheme is used, so ``memory://`` users
never import pynng or pyzmq. Third-party transports register in the entry-point group
``nanomitter.transports`` (name = scheme, value = ``module:Class``) or call :func:`register`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from importlib.metadata import entry_points

from ..core.errors import UnknownSchemeError
from .base import Transport
from .url import BusURL

ENTRY_POINT_GROUP = "nanomitter.transports"

NNG_SCHEMES = (
    "tcp", "ipc", "inproc", "ws", "tls+tcp",
    "nng+tcp", "nng+ipc", "nng+inproc", "nng+ws", "nng+tls+tcp",
)  # fmt: skip
ZMQ_SCHEMES = ("zmq+tcp", "zmq+ipc")
NATS_SCHEMES = ("nats", "tls")
_BUILTIN: dict[str, str] = {
    "memory": "nanomitter.transports.memory:MemoryTransport",
    **dict.fromkeys(NNG_SCHEMES, "nanomitter.transports.nng:NngTransport"),
    **dict.fromkeys(ZMQ_SCHEMES, "nanomitter.transports.zmq:ZmqTransport"),
    **dict.fromkeys(NATS_SCHEMES, "nanomitter.transports.nats:NatsTransport"),
}
_registered: dict[str, type[Transport] | str] = {}
_plugins_loaded: list[bool] = []


def register(scheme: str, transport: type[Transport] | str) -> None:
    """Use ``transport`` (a class or ``"module:Class"``) for URLs with ``scheme``."""
    _registered[scheme.lower()] = transport


def unregister(scheme: str) -> None:
    _registered.pop(scheme.lower(), None)


def _load_plugins() -> None:
    if _plugins_loaded:
        return
    _plugins_loaded.append(True)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        _registered.setdefault(entry.name.lower(), entry.value)


def known_schemes() -> list[str]:
    _load_plugins()
    return sorted({*_BUILTIN, *_registered})


def transport_class(scheme: str) -> type[Transport]:
    """The class registered for ``scheme``; :class:`UnknownSchemeError` lists the known ones."""
    _load_plugins()
    target = _registered.get(scheme) or _BUILTIN.get(scheme)
    if target is None:
        raise UnknownSchemeError(scheme, known_schemes())
    if isinstance(target, str):
        module_name, _, attribute = target.partition(":")
        target = getattr(importlib.import_module(module_name), attribute)
        if scheme in _registered:
            _registered[scheme] = target
    if not (isinstance(target, type) and issubclass(target, Transport)):
        raise TypeError(f"transport registered for {scheme}:// is not a Transport: {target!r}")
    return target


def transport_from_url(url: str, options: Mapping[str, object] | None = None) -> Transport:
    """Parse ``url``, check its options against the transport's, and build the transport."""
    parsed = BusURL.parse(url, options)
    cls = transport_class(parsed.scheme)
    parsed.check_options(cls.options)
    return cls.from_url(parsed)
