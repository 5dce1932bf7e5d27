"""Plain NATS requests: ``nats req "<?.price" '{"ticker": "AAPL"}'`` reaches our responders.

A NATS client that knows nothing of nanomitter sends a request with a reply subject of its own
(``msg.reply``, an ``_INBOX`` subject) and no ``Nanomitter-Sender`` header. The transport hands
it to the core as a request from a stand-in requester (``foreign-N``; responders see
``event.sender == ""``) with the body as its data;
when the core answers that requester, the answer goes to the client's reply subject as a plain
body in the request's codec, or, when the responder raised, as an empty message with the
headers of the NATS service protocol (``Nats-Service-Error``, ``Nats-Service-Error-Code``),
which NATS clients read as an error. Queue groups keep it to one answer per request.
"""

from __future__ import annotations

from typing import Any

from ..core.event import DistributedEvent
from ..core.payloads import PayloadCodec
from ..core.requests import ASK, FOREIGN, REPLY

MAX_WAITING = 4096
"""Plain requests waiting for an answer; beyond, the oldest is forgotten (its client times
out, as it would if the responder never answered)."""

ERROR_HEADER = "Nats-Service-Error"
ERROR_CODE_HEADER = "Nats-Service-Error-Code"
_REPLY_STAND_IN = f"{REPLY}{FOREIGN}"


class PlainRequests:
    """The plain requests one transport has handed to its core and not yet answered."""

    def __init__(self) -> None:
        self._waiting: dict[str, tuple[bytes, PayloadCodec]] = {}
        self._count = 0

    @staticmethod
    def is_plain(topic: str, reply: bytes, sender: str) -> bool:
        """A request (not a survey) with a reply subject and none of our headers."""
        return bool(reply) and not sender and topic.startswith(ASK)

    def accept(self, topic: str, reply: bytes, data: Any, codec: PayloadCodec) -> DistributedEvent:
        """The request event for the core; its answer will go to ``reply``."""
        self._count += 1
        requester = f"{FOREIGN}{self._count}"
        if len(self._waiting) >= MAX_WAITING:
            del self._waiting[next(iter(self._waiting))]
        self._waiting[requester] = (reply, codec)
        return DistributedEvent(topic=topic, data={"id": 1, "data": data}, sender=requester)

    def answer(self, event: DistributedEvent) -> bytes | None:
        """The NATS command that answers a plain requester; None if ``event`` answers none."""
        if not event.topic.startswith(_REPLY_STAND_IN):
            return None
        requester = event.topic[len(REPLY) :].partition(".")[0]
        waiting = self._waiting.get(requester)
        if waiting is None:
            return None
        reply, codec = waiting
        envelope = event.data if isinstance(event.data, dict) else {}
        error = envelope.get("error")
        if error is None:
            # may raise (data the codec cannot encode): the core then answers with an error,
            # which comes back here while the requester still waits
            body = codec.encode(event.topic, envelope.get("data"))
            del self._waiting[requester]
            return b"PUB %b %d\r\n%b\r\n" % (reply, len(body), body)
        del self._waiting[requester]
        fields = error if isinstance(error, dict) else {"message": str(error)}
        text = f"{fields.get('type', 'Error')}: {fields.get('message', '')}"
        head = (
            f"NATS/1.0\r\n{ERROR_HEADER}: {_header_value(text)}\r\n{ERROR_CODE_HEADER}: 500\r\n\r\n"
        ).encode()
        return b"HPUB %b %d %d\r\n%b\r\n" % (reply, len(head), len(head), head)

    def __len__(self) -> int:
        return len(self._waiting)


def _header_value(text: str) -> str:
    """``text`` as one header line: no line breaks, at most 1024 characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= 1024 else flat[:1021] + "..."


__all__ = ["ERROR_CODE_HEADER", "ERROR_HEADER", "MAX_WAITING", "PlainRequests"]
