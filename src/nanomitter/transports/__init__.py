"""Transports: the contract, the scheme registry and the built-in backends."""

from .base import BusURL, Capabilities, Transport, TransportContext
from .registry import known_schemes, register, transport_class, transport_from_url, unregister

__all__ = [
    "BusURL",
    "Capabilities",
    "Transport",
    "TransportContext",
    "known_schemes",
    "register",
    "transport_class",
    "transport_from_url",
    "unregister",
]
