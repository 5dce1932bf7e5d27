"""Exceptions and problem reports.

Call-site mistakes raise built-in types (``ValueError``, ``TypeError``, ``TimeoutError``) so
users can catch them the usual way; our subclasses add the detail. Problems that happen in
the receive loop (bad frames, failing listeners) are never raised there: they are wrapped in
a :class:`Problem` subclass and handed to the emitter's error hook.
"""

from __future__ import annotations

from collections.abc import Iterable


class NanomitterError(Exception):
    """Base class of every exception nanomitter defines."""


class UnknownSchemeError(NanomitterError, ValueError):
    """A URL names a transport scheme that no installed transport handles."""

    def __init__(self, scheme: str, known: Iterable[str]) -> None:
        self.scheme = scheme
        self.known = sorted(known)
        super().__init__(
            f"unknown bus URL scheme {scheme!r}; known schemes: "
            f"{', '.join(s + '://' for s in self.known)} "
            "(install a transport package that registers this scheme in the "
            "'nanomitter.transports' entry-point group to add one)"
        )


class UnknownOptionError(NanomitterError, ValueError):
    """A URL query parameter or keyword option is not one the transport knows."""

    def __init__(self, scheme: str, names: Iterable[str], known: Iterable[str]) -> None:
        self.scheme = scheme
        self.names = sorted(names)
        self.known = sorted(known)
        known_text = ", ".join(self.known) if self.known else "(none)"
        super().__init__(
            f"unknown option(s) {', '.join(map(repr, self.names))} for {scheme}:// ; "
            f"known options: {known_text}"
        )


class InvalidOptionError(NanomitterError, ValueError):
    """A known option has a value the transport cannot use."""


class BusClosedError(NanomitterError, RuntimeError):
    """The emitter is not open (never entered, or already closed)."""


class UnsupportedBackendError(NanomitterError, RuntimeError):
    """The transport's client library does not run on this async backend (e.g. trio)."""


class NoResponders(NanomitterError, LookupError):
    """No responder on the bus serves the topic of a :meth:`request`."""

    def __init__(self, topic: str, detail: str) -> None:
        self.topic = topic
        super().__init__(
            f"no responder for {topic!r}: {detail} "
            f"(register one with @bus.responder({topic!r}) on some node)"
        )


class RequestTimeout(NanomitterError, TimeoutError):
    """A request got no reply in time; a built-in ``TimeoutError`` too."""

    def __init__(
        self, topic: str, timeout: float, *, responder: str = "", service: str = ""
    ) -> None:
        self.topic = topic
        self.timeout = timeout
        self.responder = responder
        """The id of the responder that was asked ("" where the server picked one)."""
        self.service = service
        who = f" from responder {responder}" if responder else ""
        if service:
            who += f" (service {service!r})"
        super().__init__(
            f"no reply to the request on {topic!r}{who} within {timeout} s "
            "(raise timeout= if the responder is slow; it may also have died)"
        )


class RemoteError(NanomitterError):
    """The responder raised: ``type`` and ``message`` are its exception's, as text."""

    def __init__(
        self, topic: str, type: str, message: str, *, responder: str = "", service: str = ""
    ) -> None:
        self.topic = topic
        self.type = type
        self.message = message
        self.responder = responder
        self.service = service
        where = f"service {service!r} ({responder})" if service else f"responder {responder}"
        super().__init__(f"{where} failed on {topic!r}: {type}: {message}")


class InvalidReplyError(NanomitterError, ValueError):
    """A reply did not convert to the ``type=`` given to :meth:`request` (``expected``), or
    did not decode at all (``expected`` is None)."""

    def __init__(self, topic: str, responder: str, expected: object, detail: str) -> None:
        self.topic = topic
        self.responder = responder
        self.expected = expected
        self.detail = detail
        who = f"responder {responder}" if responder else "a foreign responder"
        if expected is None:  # the reply did not even decode
            super().__init__(f"the reply on {topic!r} from {who} did not decode: {detail}")
            return
        type_name = getattr(expected, "__name__", repr(expected))
        super().__init__(f"the reply on {topic!r} from {who} is not a valid {type_name}: {detail}")


class EventTooLargeError(NanomitterError, ValueError):
    """``emit`` refused an event larger than its transport carries; nothing was sent.

    ``size`` is what the event encodes to, ``limit`` the transport's ``max_event_bytes``.
    """

    def __init__(self, topic: str, size: int, limit: int, remedy: str) -> None:
        self.topic = topic
        self.size = size
        self.limit = limit
        super().__init__(
            f"cannot emit on {topic!r}: the event encodes to {size} bytes, over this bus's "
            f"limit of {limit} bytes; nothing was sent ({remedy})"
        )


class Problem(NanomitterError):
    """Something went wrong while receiving or dispatching; reported, never raised."""

    kind = "problem"


class ListenerError(Problem):
    """A listener raised; the exception is ``__cause__`` and ``.exception``."""

    kind = "listener_error"

    def __init__(self, topic: str, listener: object, exception: BaseException) -> None:
        self.topic = topic
        self.listener = listener
        self.exception = exception
        name = getattr(listener, "__qualname__", repr(listener))
        super().__init__(
            f"listener {name} raised {type(exception).__name__} on topic {topic!r}: {exception}"
        )
        self.__cause__ = exception


class ResponderError(ListenerError):
    """A responder raised (its requester got a :class:`RemoteError`); it keeps serving."""

    kind = "responder_error"

    def __init__(self, topic: str, responder: object, exception: BaseException) -> None:
        super().__init__(topic, responder, exception)
        name = getattr(responder, "__qualname__", repr(responder))
        self.args = (
            f"responder {name} raised {type(exception).__name__} on {topic!r} "
            f"(sent back to the requester): {exception}",
        )


class FrameDecodeError(Problem):
    """A frame from the network did not decode; it was dropped and counted."""

    kind = "decode_error"

    def __init__(self, reason: str, frame: bytes | None = None) -> None:
        self.reason = reason
        self.frame_prefix = (frame or b"")[:32]
        size = "" if frame is None else f" ({len(frame)} bytes, starts {self.frame_prefix.hex()})"
        super().__init__(f"dropped an undecodable frame{size}: {reason}")


class InvalidEventError(Problem):
    """An event's data did not validate against a typed listener's ``type=``."""

    kind = "invalid"

    def __init__(self, topic: str, listener: object, expected: object, detail: str) -> None:
        self.topic = topic
        self.listener = listener
        self.expected = expected
        self.detail = detail
        name = getattr(listener, "__qualname__", repr(listener))
        type_name = getattr(expected, "__name__", repr(expected))
        super().__init__(
            f"event on {topic!r} skipped for listener {name}: data is not a valid "
            f"{type_name}: {detail}"
        )


class OverflowProblem(Problem):
    """A bounded queue was full and an event was dropped (counted in ``dropped``)."""

    kind = "dropped"

    def __init__(self, where: str, capacity: int) -> None:
        self.where = where
        self.capacity = capacity
        super().__init__(
            f"dropped an event: {where} queue is full ({capacity} events); "
            "the consumer is slower than the publisher (raise the queue size or speed it up)"
        )


class PermissionDenied(Problem, PermissionError):
    """The server refused this connection's user a publish or a subscription (NATS
    permissions). Reported through the error hook; ``listening()`` raises it while a
    subscription the listeners need is refused.

    ``action`` is ``"publish"`` or ``"subscribe"``; ``subject`` is the NATS subject.
    ``kind`` is ``"publish_denied"`` or ``"subscribe_denied"``, so the default hook's rate
    limit never hides a refused subscription behind a stream of refused publishes.
    """

    def __init__(self, action: str, subject: str, address: str) -> None:
        self.kind = f"{action}_denied"
        self.action = action
        self.subject = subject
        self.address = address
        if action == "publish":
            text = (
                f'the NATS server at {address} refused a publish to "{subject}" (permissions '
                "violation): the event reached nobody; grant this user publish permission "
                "on the subject"
            )
        else:
            text = (
                f'the NATS server at {address} refused the subscription to "{subject}" '
                "(permissions violation): listeners on it receive nothing; grant this user "
                "subscribe permission on the subject, or remove the listener"
            )
        super().__init__(text)


class ConnectionStateChanged(Problem):
    """A transport lost, regained or gave up its connection (reported through the error
    hook, so one hook sees everything that happens to the bus; never raised).

    ``state`` is ``"disconnected"``, ``"reconnected"`` or ``"closed"``; ``kind`` equals it,
    so the default hook's rate limit never hides a reconnect behind its disconnect.
    """

    def __init__(self, state: str, address: str, detail: str = "") -> None:
        self.state = state
        self.kind = state
        self.address = address
        self.detail = detail
        messages = {
            "disconnected": f"lost the connection to {address}; reconnecting",
            "reconnected": f"reconnected to {address}",
            "closed": f"gave up the connection to {address}",
        }
        text = messages.get(state, f"{state}: {address}")
        super().__init__(f"{text} ({detail})" if detail else text)
