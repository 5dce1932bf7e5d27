"""Request/reply and surveys: one protocol in the core, over any transport that moves events.

Requests and replies are events on reserved topics that listeners never see (``emit`` and
``on`` refuse them; a bare ``*`` listener does not get them):

- ``<?.TOPIC``: a request for one responder, ``{"id": N, "to": RESPONDER, "data": ...}``
  (``to`` is empty where the transport picks the responder).
- ``<??.TOPIC``: a survey for every responder, ``{"id": N, "data": ...}``, or a probe
  ``{"id": N, "probe": true}`` that responders answer with their presence.
- ``<!.REQUESTER.N``: the answer to the requester's request N: ``{"data": ..., "service":
  ...}``, ``{"error": {"type": ..., "message": ...}, "service": ...}``, ``{"here":
  HEARTBEAT}`` (to a probe) or ``{"status": 503}`` (nobody serves it: NATS says so).

They travel unnumbered (``seq`` 0): a lost request or reply shows up as the requester's
timeout, and a reply that comes after it is counted in ``late_replies``.

Who answers a request: a responder on the requesting emitter itself, when it has one (no
network hop). Otherwise, where the transport balances requests (NATS queue groups) the
server picks one live subscriber; elsewhere the requester picks, round robin, among the live
responders it knows from presence (heartbeats say what each node serves; knowing none, it
probes the bus first and takes the first to answer). A responder that misses a deadline is
passed over until it is heard from again.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc
import msgspec

from .codecs import Reporter, UnserializableDataError
from .context import YIELD
from .errors import (
    BusClosedError,
    FrameDecodeError,
    InvalidEventError,
    InvalidReplyError,
    NanomitterError,
    NoResponders,
    OverflowProblem,
    RemoteError,
    RequestTimeout,
    ResponderError,
)
from .event import DistributedEvent
from .listeners import check_type, is_async_callable
from .presence import ORIGINAL_INTERVAL, PeerTable, heartbeat_data
from .stats import Counters
from .topics import ANY, pattern_matches, validate_pattern, validate_topic

ASK = "<?."
SURVEY = "<??."
REPLY = "<!."
NO_RESPONDERS = 503
FOREIGN = "foreign-"
"""How the stand-in requester ids of foreign requests begin: a transport that answers a client
without nanomitter itself (a plain NATS request) hands the core a request from ``foreign-N``;
responders see ``event.sender == ""`` (our ids are 21-character nanoids: never this)."""
UNDECODABLE = "$undecodable"
"""A transport that got a reply it could not decode hands the core ``{UNDECODABLE: why}``:
the request raises ``InvalidReplyError`` at once instead of timing out."""
ENVELOPE_KEYS = frozenset({"data", "service", "error", "here", "status", UNDECODABLE})
"""The keys of our reply envelopes (see the module docstring); see :func:`reply_envelope`."""
DEFAULT_CONCURRENCY = 64
"""Requests one async responder works on at once; beyond that it answers ``ResponderBusy``."""
MAX_CACHED_TOPICS = 1024
SUSPECT_SECONDS = 30.0
"""How long a responder that missed a deadline is passed over, unless it answers sooner."""
MAX_SUSPECTS = 1024

_REPLYABLE = re.compile(r"[A-Za-z0-9_-]{1,64}").fullmatch
"""Requester ids a reply topic can carry (nanoid's alphabet): no dots, spaces or wildcards."""

Send = Callable[[DistributedEvent], Awaitable[None] | None]
Responder = Callable[[DistributedEvent], Any]


@dataclass(frozen=True)
class Reply:
    """One responder's answer to a :meth:`survey`."""

    data: Any
    """What the responder returned (None when it failed)."""
    sender: str
    """The responder's emitter id."""
    service: str
    """The responder's service name ("" when it has none)."""
    error: RemoteError | None = None
    """Set instead of ``data`` when the responder raised."""


class _Served:
    """One ``bus.responder(...)`` registration."""

    __slots__ = ("concurrency", "fn", "in_flight", "is_async", "pattern", "type")

    def __init__(self, pattern: str, fn: Responder, type: Any, concurrency: int):
        self.pattern = pattern
        self.fn = fn
        self.type = type
        self.concurrency = concurrency
        self.is_async = is_async_callable(fn)
        self.in_flight = 0


class _Pending:
    """A request, survey or probe waiting for answers."""

    __slots__ = ("answers", "done", "expect", "kind", "local", "nobody")

    def __init__(self, kind: str, expect: int | None = None) -> None:
        self.kind = kind
        self.expect = expect
        self.answers: list[tuple[str, dict[str, Any]]] = []
        self.done = anyio.Event()
        self.local = False
        """A local responder is still working on it (surveys wait for it)."""
        self.nobody = False
        """The transport said no remote responder exists."""

    def add(self, sender: str, envelope: dict[str, Any]) -> None:
        if envelope.get("status") == NO_RESPONDERS:
            self.nobody = True
            if self.kind != "survey" or not self.local:
                self.done.set()
            return
        if self.kind == "probe":
            if "here" in envelope:
                self.answers.append((sender, envelope))
                self.done.set()
            return
        if "here" in envelope:
            return
        self.answers.append((sender, envelope))
        if self.kind == "request" or (self.expect is not None and len(self.answers) >= self.expect):
            self.done.set()


class Requests:
    """The responders of one emitter and the requests it is waiting on."""

    def __init__(
        self,
        me: str,
        *,
        service: str,
        presence: PeerTable,
        counters: Counters,
        report: Reporter,
        send: Send,
        interest_changed: Callable[[], None],
        heartbeat_interval: float,
    ) -> None:
        self._me = me
        self._heartbeat_interval = heartbeat_interval
        self._service = service
        self._presence = presence
        self._counters = counters
        self._report = report
        self._send = send
        self._interest_changed = interest_changed
        self._responders: dict[str, _Served] = {}
        self._matches: dict[str, _Served | None] = {}  # topic -> responder, until they change
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._inbox = f"{REPLY}{me}."
        self._inbox_state: anyio.Event | None = None
        self._suspects: dict[str, float] = {}  # responder id -> passed over until
        self._candidates: dict[str, list[str]] = {}
        self._candidates_version = -1
        self._turn = random.randrange(1 << 16)  # requesters that start together spread out
        self._task_group: anyio.abc.TaskGroup | None = None
        self._balanced = False
        self._sync_interest: Callable[[], Awaitable[None]] | None = None
        self._closed = False

    def start(
        self,
        task_group: anyio.abc.TaskGroup,
        *,
        balanced: bool,
        sync_interest: Callable[[], Awaitable[None]],
    ) -> None:
        self._task_group = task_group
        self._balanced = balanced
        self._sync_interest = sync_interest

    def close(self) -> None:
        """Wake every waiting request; they raise ``BusClosedError``."""
        self._closed = True
        for pending in self._pending.values():
            pending.done.set()

    # ------------------------------------------------------------------ responders

    def add(self, pattern: str, fn: Responder, *, type: Any, concurrency: int) -> None:
        if not callable(fn):
            raise TypeError(f"responder must be callable, got {fn!r}")
        validate_pattern(pattern)
        check_type(type)
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if pattern in self._responders:
            raise ValueError(
                f"this emitter already has a responder for {pattern!r}; "
                f"remove it first with bus.off_responder({pattern!r})"
            )
        self._responders[pattern] = _Served(pattern, fn, type, concurrency)
        self._matches.clear()
        self._interest_changed()

    def remove(self, pattern: str) -> bool:
        if self._responders.pop(pattern, None) is None:
            return False
        self._matches.clear()
        self._interest_changed()
        return True

    def patterns(self) -> tuple[str, ...]:
        """What this emitter serves, in registration order (announced in heartbeats)."""
        return tuple(self._responders)

    def interest(self) -> frozenset[str]:
        """The reserved topics this emitter must receive."""
        wanted: set[str] = set()
        for pattern in self._responders:
            tail = ">" if pattern == ANY else pattern
            wanted.add(ASK + tail)
            wanted.add(SURVEY + tail)
        if self._inbox_state is not None:
            wanted.add(self._inbox + ">")
        return frozenset(wanted)

    def _match(self, topic: str) -> _Served | None:
        """This emitter's responder for ``topic``: the first registered that matches."""
        cache = self._matches
        if topic in cache:
            return cache[topic]
        # a few patterns per emitter, and the answer is cached per topic: no trie needed
        served = next(
            (s for s in self._responders.values() if pattern_matches(s.pattern, topic)), None
        )
        if len(cache) >= MAX_CACHED_TOPICS:
            cache.clear()
        cache[topic] = served
        return served

    # ------------------------------------------------------------------ asking

    async def request(self, topic: str, data: Any, timeout: float, type: Any) -> Any:  # noqa: ASYNC109
        validate_topic(topic)
        _check_timeout(timeout)
        local = self._match(topic)
        refused: set[str] = set()  # responders that said they stopped serving the topic
        deadline = anyio.current_time() + timeout
        while True:
            target, probing, pending = await self._ask(topic, data, deadline, local, refused)
            self._check_open()
            if pending.answers:
                sender, envelope = pending.answers[0]
                return _result(topic, sender, envelope, type)
            if pending.nobody:
                if not target:
                    raise NoResponders(topic, "the server knows no subscriber for it")
                refused.add(target)  # it did not act on the request: safe to ask another
                if anyio.current_time() < deadline and self._pick(topic, refused):
                    continue
                raise NoResponders(topic, f"responder {target} stopped serving it")
            if probing:
                raise NoResponders(topic, f"none answered a probe within {timeout} s")
            if target and target != self._me:
                self._suspect(target)
            raise RequestTimeout(topic, timeout, responder=target, service=self._service_of(target))

    async def _ask(
        self,
        topic: str,
        data: Any,
        deadline: float,
        local: _Served | None,
        refused: set[str],
    ) -> tuple[str, bool, _Pending]:
        """One attempt: pick a responder, send, wait until an answer or the deadline."""
        target = ""
        probing = False
        rid, pending = self._open("request")
        try:
            with anyio.CancelScope(deadline=deadline):
                if local is not None:
                    target = self._me
                    self._counters.requests += 1
                    self._serve(local, topic, self._me, data, self._local_answer(rid))
                else:
                    await self._open_inbox()
                    if not self._balanced:
                        target = self._pick(topic, refused) or ""
                        if not target and not refused:
                            probing = True
                            target = await self._probe(topic)
                            probing = False
                    ask = {"id": rid, "to": target, "data": data}
                    await self._post_request(ASK + topic, ask)
                await pending.done.wait()
        finally:
            del self._pending[rid]
        return target, probing, pending

    async def survey(
        self,
        topic: str,
        data: Any,
        timeout: float,  # noqa: ASYNC109 (a deadline named in the errors)
        expect: int | None,
    ) -> list[Reply]:
        validate_topic(topic)
        _check_timeout(timeout)
        if expect is not None and (isinstance(expect, bool) or not isinstance(expect, int)):
            raise TypeError(f"expect must be an int >= 1 or None, got {expect!r}")
        if expect is not None and expect < 1:
            raise ValueError(f"expect must be >= 1 (None waits the whole timeout), got {expect}")
        local = self._match(topic)
        rid, pending = self._open("survey", expect)
        try:
            with anyio.move_on_after(timeout):
                if local is not None:
                    pending.local = True
                    self._serve(local, topic, self._me, data, self._local_answer(rid))
                await self._open_inbox()
                await self._post_request(SURVEY + topic, {"id": rid, "data": data})
                if not pending.done.is_set():
                    await pending.done.wait()
        finally:
            del self._pending[rid]
        self._check_open()
        return [_reply(topic, sender, envelope) for sender, envelope in pending.answers]

    def _open(self, kind: str, expect: int | None = None) -> tuple[int, _Pending]:
        self._check_open()
        rid = next(self._ids)
        pending = self._pending[rid] = _Pending(kind, expect)
        return rid, pending

    def _check_open(self) -> None:
        if self._closed:
            raise BusClosedError("the emitter closed while a request was waiting for replies")
        if self._task_group is None:
            raise BusClosedError(
                "cannot send a request: the emitter is not open yet; use 'async with connect(...)'"
            )

    async def _open_inbox(self) -> None:
        """Make sure replies to this emitter reach it (one round trip, the first time)."""
        state = self._inbox_state
        if state is None:
            state = self._inbox_state = anyio.Event()
            self._interest_changed()
            assert self._sync_interest is not None
            await self._sync_interest()
            state.set()
        elif not state.is_set():
            await state.wait()

    async def _probe(self, topic: str) -> str:
        """Ask every responder of ``topic`` to say it is there; return the first one's id."""
        rid, pending = self._open("probe")
        try:
            await self._post_request(SURVEY + topic, {"id": rid, "probe": True})
            await pending.done.wait()
        finally:
            del self._pending[rid]
        self._check_open()
        if pending.nobody:
            raise NoResponders(topic, "the server knows no subscriber for it")
        return pending.answers[0][0]

    async def _post_request(self, topic: str, envelope: dict[str, Any]) -> None:
        event = DistributedEvent(topic=topic, data=envelope, sender=self._me)
        try:
            pending = self._send(event)
            if pending is not None:
                await pending
        except UnserializableDataError as exc:
            asked = topic.split(".", 1)[1]
            text = str(exc).replace(
                f"cannot emit on {topic!r}", f"cannot send a request on {asked!r}"
            )
            raise UnserializableDataError(text) from exc
        if "probe" not in envelope:
            self._counters.requests += 1

    def _pick(self, topic: str, refused: set[str]) -> str | None:
        """The next live responder for ``topic``, round robin, passing over suspects (and
        never one in ``refused``)."""
        presence = self._presence
        if self._candidates_version != presence.version:
            self._candidates.clear()
            self._candidates_version = presence.version
        ids = self._candidates.get(topic)
        if ids is None:
            ids = [
                peer.id
                for peer in presence.peers()
                if any(pattern_matches(p, topic) for p in peer.responds)
            ]
            if len(self._candidates) >= MAX_CACHED_TOPICS:
                self._candidates.clear()
            self._candidates[topic] = ids
        if refused:
            ids = [candidate for candidate in ids if candidate not in refused]
        if not ids:
            return None
        suspects = self._suspects
        now = anyio.current_time() if suspects else 0.0
        for _ in range(len(ids)):
            self._turn += 1
            candidate = ids[self._turn % len(ids)]
            if suspects.get(candidate, 0.0) <= now:
                return candidate
        return ids[self._turn % len(ids)]  # all of them missed a deadline: try anyway

    def _suspect(self, responder: str) -> None:
        """Pass ``responder`` over for a while: it missed a deadline (hung, or dead but not
        yet declared gone). Its heartbeats do not clear this: a hung process still sends them."""
        now = anyio.current_time()
        if len(self._suspects) >= MAX_SUSPECTS:
            self._suspects = {k: v for k, v in self._suspects.items() if v > now}
            if len(self._suspects) >= MAX_SUSPECTS:
                del self._suspects[next(iter(self._suspects))]
        self._suspects[responder] = now + SUSPECT_SECONDS

    def heard(self, sender: str) -> None:
        """``sender`` answered (even late): no longer passed over."""
        if self._suspects:
            self._suspects.pop(sender, None)

    def _service_of(self, target: str) -> str:
        for peer in self._presence.peers():
            if peer.id == target:
                return peer.service
        return ""

    # ------------------------------------------------------------------ receiving

    def accept(self, event: DistributedEvent) -> None:
        """A ``<?``/``<!`` event from another emitter."""
        topic = event.topic
        envelope = event.data
        if topic.startswith(REPLY):
            if topic.startswith(self._inbox):
                self._on_answer(event, reply_envelope(envelope))
            # else: another requester's reply (broadcast transports show every node all)
        elif not isinstance(envelope, dict):
            self._bad(event, "its data is not a map")
        elif topic.startswith(SURVEY):
            self._on_request(event, envelope, topic[len(SURVEY) :], survey=True)
        elif topic.startswith(ASK):
            self._on_request(event, envelope, topic[len(ASK) :], survey=False)
        else:
            self._bad(event, "the topic is in the reserved request/reply namespace")

    def _on_request(
        self, event: DistributedEvent, envelope: dict[str, Any], topic: str, *, survey: bool
    ) -> None:
        rid = envelope.get("id")
        if type(rid) is not int:
            self._bad(event, "the request has no integer 'id'")
            return
        if not _REPLYABLE(event.sender):
            self._bad(event, "the requester's id cannot name a reply topic")
            return
        if not survey:
            to = envelope.get("to", "")
            if to and to != self._me:
                return  # addressed to another responder
        served = self._match(topic)
        answer = self._remote_answer(event.sender, rid)
        if served is None:
            if not survey and envelope.get("to"):
                answer({"status": NO_RESPONDERS})  # it was ours, but is gone: fail fast
            return
        if envelope.get("probe") is True:
            answer({"here": self._here()})
            return
        sender = "" if event.sender.startswith(FOREIGN) else event.sender
        self._serve(served, topic, sender, envelope.get("data"), answer)

    def _here(self) -> dict[str, Any]:
        """A probe's answer: our heartbeat, so the requester knows us from now on."""
        interval = self._heartbeat_interval if self._heartbeat_interval > 0 else ORIGINAL_INTERVAL
        return heartbeat_data(self._service, interval, responds=self.patterns())

    def _on_answer(self, event: DistributedEvent, envelope: dict[str, Any]) -> None:
        try:
            rid = int(event.topic[len(self._inbox) :])
        except ValueError:
            self._bad(event, "the reply topic does not end in a request id")
            return
        sender = event.sender
        here = envelope.get("here")
        if isinstance(here, dict) and sender:
            self._presence.heartbeat(sender, here)
        self.heard(sender)
        pending = self._pending.get(rid)
        if pending is None:
            if here is None:
                self._counters.late_replies += 1
            return
        pending.add(sender, envelope)

    def _bad(self, event: DistributedEvent, why: str) -> None:
        self._counters.decode_errors += 1
        self._report(
            FrameDecodeError(f"bad request/reply on {event.topic!r} from {event.sender!r}: {why}")
        )

    # ------------------------------------------------------------------ serving

    def _serve(
        self,
        served: _Served,
        topic: str,
        sender: str,
        data: Any,
        answer: Callable[[dict[str, Any]], None],
    ) -> None:
        """Call the responder; its result (or failure) goes to ``answer``."""
        if served.type is not None and type(data) is not served.type:
            try:
                data = msgspec.convert(data, served.type)
            except msgspec.ValidationError as exc:
                self._counters.invalid += 1
                self._report(InvalidEventError(topic, served.fn, served.type, str(exc)))
                answer(self._failure(exc))
                return
        event = DistributedEvent(topic=topic, data=data, sender=sender)
        if served.is_async:
            if served.in_flight >= served.concurrency:
                self._counters.dropped += 1
                where = f"responder {_name(served.fn)}"
                self._report(OverflowProblem(where, served.concurrency))
                answer(
                    {
                        "error": {
                            "type": "ResponderBusy",
                            "message": f"already working on {served.concurrency} request(s) "
                            "(its concurrency limit)",
                        },
                        "service": self._service,
                    }
                )
                return
            served.in_flight += 1
            assert self._task_group is not None
            self._task_group.start_soon(self._serve_async, served, event, answer)
            return
        try:
            result = served.fn(event)
        except Exception as exc:
            self._responder_failed(served, topic, exc)
            answer(self._failure(exc))
            return
        answer({"data": result, "service": self._service})

    async def _serve_async(
        self, served: _Served, event: DistributedEvent, answer: Callable[[dict[str, Any]], None]
    ) -> None:
        try:
            result = await served.fn(event)
        except Exception as exc:
            self._responder_failed(served, event.topic, exc)
            answer(self._failure(exc))
        else:
            answer({"data": result, "service": self._service})
        finally:
            served.in_flight -= 1

    def _responder_failed(self, served: _Served, topic: str, exc: Exception) -> None:
        self._counters.listener_errors += 1
        self._report(ResponderError(topic, served.fn, exc))

    def _failure(self, exc: BaseException) -> dict[str, Any]:
        return {
            "error": {"type": type(exc).__name__, "message": str(exc)},
            "service": self._service,
        }

    def _local_answer(self, rid: int) -> Callable[[dict[str, Any]], None]:
        def answer(envelope: dict[str, Any]) -> None:
            self._counters.served += 1
            pending = self._pending.get(rid)
            if pending is None:
                self._counters.late_replies += 1
                return
            pending.local = False
            pending.add(self._me, envelope)
            if pending.kind == "survey" and pending.nobody:
                pending.done.set()

        return answer

    def _remote_answer(self, requester: str, rid: int) -> Callable[[dict[str, Any]], None]:
        topic = f"{REPLY}{requester}.{rid}"  # = reply_topic() of the request

        def answer(envelope: dict[str, Any]) -> None:
            self._counters.served += "status" not in envelope and "here" not in envelope
            self._post_reply(topic, envelope)

        return answer

    def _post_reply(self, topic: str, envelope: dict[str, Any]) -> None:
        event = DistributedEvent(topic=topic, data=envelope, sender=self._me)
        try:
            pending = self._send(event)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            return  # closing: the requester times out
        except (TypeError, ValueError, NanomitterError) as exc:
            self._unsendable(topic, envelope, exc)
            return
        if pending is not None and pending is not YIELD and self._task_group is not None:
            self._task_group.start_soon(self._finish_reply, pending, topic, envelope)

    async def _finish_reply(
        self, pending: Awaitable[None], topic: str, envelope: dict[str, Any]
    ) -> None:
        try:
            await pending
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            return
        except (TypeError, ValueError, NanomitterError) as exc:
            self._unsendable(topic, envelope, exc)

    def _unsendable(self, topic: str, envelope: dict[str, Any], exc: Exception) -> None:
        """The reply could not be encoded or sent: tell the requester instead of going quiet."""
        self._report(ResponderError(topic, self._post_reply, exc))
        self._counters.listener_errors += 1
        if "error" in envelope:
            return  # even the error did not go: the requester times out
        failure = self._failure(exc)
        detail = str(exc).replace(f"cannot emit on {topic!r}: ", "")
        failure["error"]["message"] = f"the reply could not be sent: {detail}"
        self._post_reply(topic, failure)


def reply_topic(event: DistributedEvent) -> str:
    """Where the answers to a request or survey event go ("" if it names no request id);
    transports with a reply field of their own (NATS) carry it there too."""
    if not event.topic.startswith((ASK, SURVEY)):
        return ""
    data = event.data
    rid = data.get("id") if isinstance(data, dict) else None
    if type(rid) is not int or not event.sender:
        return ""
    return f"{REPLY}{event.sender}.{rid}"


def _check_timeout(timeout: float) -> None:
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"timeout must be a number of seconds > 0, got {timeout!r}")
    if not timeout > 0:
        raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")


def reply_envelope(data: Any) -> dict[str, Any]:
    """A reply's envelope: ``data`` itself when it is one of ours, else ``{"data": data}``.

    A foreign responder (a plain NATS client answering ``msg.reply``, a peer in another
    language) answers with a bare body; that body is the reply's data, never a silent None.
    A bare answer that happens to look like our envelope (a map of only these keys, with
    ``data``, ``error``, ``here`` or ``status``) is read as one.
    """
    if (
        type(data) is dict
        and data.keys() <= ENVELOPE_KEYS
        and not data.keys().isdisjoint(("data", "error", "here", "status", UNDECODABLE))
    ):
        return data
    return {"data": data}


def _result(topic: str, sender: str, envelope: dict[str, Any], type: Any) -> Any:
    undecodable = envelope.get(UNDECODABLE)
    if undecodable is not None:
        raise InvalidReplyError(topic, sender, None, str(undecodable))
    failure = _remote_error(topic, sender, envelope)
    if failure is not None:
        raise failure
    data = envelope.get("data")
    if type is None:
        return data
    try:
        return msgspec.convert(data, type)
    except msgspec.ValidationError as exc:
        raise InvalidReplyError(topic, sender, type, str(exc)) from exc


def _reply(topic: str, sender: str, envelope: dict[str, Any]) -> Reply:
    service = envelope.get("service")
    service = service if isinstance(service, str) else ""
    return Reply(
        data=envelope.get("data"),
        sender=sender,
        service=service,
        error=_remote_error(topic, sender, envelope),
    )


def _remote_error(topic: str, sender: str, envelope: dict[str, Any]) -> RemoteError | None:
    error = envelope.get("error")
    undecodable = envelope.get(UNDECODABLE)
    if error is None and undecodable is not None:  # in a survey: that reply's error
        error = {"type": "InvalidReplyError", "message": f"the reply did not decode: {undecodable}"}
    if error is None:
        return None
    service = envelope.get("service")
    fields = error if isinstance(error, dict) else {}
    return RemoteError(
        topic,
        str(fields.get("type", "Error")),
        str(fields.get("message", error)),
        responder=sender,
        service=service if isinstance(service, str) else "",
    )


def _name(fn: object) -> str:
    return getattr(fn, "__qualname__", repr(fn))


__all__ = [
    "ASK",
    "FOREIGN",
    "NO_RESPONDERS",
    "REPLY",
    "SURVEY",
    "UNDECODABLE",
    "Reply",
    "Requests",
    "reply_envelope",
    "reply_topic",
]
