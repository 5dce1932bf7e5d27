"""Rule 10 (ours): request/reply and surveys, in one process and across processes."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel

from ...core.errors import (
    InvalidEventError,
    ListenerError,
    NoResponders,
    RemoteError,
    RequestTimeout,
    ResponderError,
)
from ...core.event import DistributedEvent
from ...core.requests import Reply
from ...core.topics import REQUEST_PREFIXES, pattern_matches
from ..harness import (
    CheckSkipped,
    Cluster,
    MakeURL,
    Node,
    Recorder,
    current_backend,
    current_deadline,
    fresh_url,
)
from ..traffic import numbered
from .common import Quote


class Refused(Exception):
    """Raised by the responders of the request/reply checks, on purpose."""


NO_RESPONDER_SLACK = 3.0
"""Seconds a request to a topic nobody serves may take beyond its timeout (slow machines)."""


def _request_timeout() -> float:
    """A per-request timeout for requests that must be answered: generous, within the deadline."""
    return min(5.0, current_deadline() / 2)


def _responders_of(node: Node, topic: str) -> set[str]:
    """The ids of the peers that ``node`` knows serve ``topic`` (from presence)."""
    return {
        peer.id
        for peer in node.bus.peers()
        if any(pattern_matches(pattern, topic) for pattern in peer.responds)
    }


async def _expect_known_responders(
    node: Node, topic: str, ids: dict[str, str], *, why: str = ""
) -> None:
    """Wait until ``node``'s presence lists every responder in ``ids`` (id -> name) for
    ``topic``; they announce a new responder at once, but it reaches others asynchronously."""
    limit = current_deadline()
    with anyio.move_on_after(limit):
        while not _responders_of(node, topic) >= set(ids):  # noqa: ASYNC110 (nothing signals it)
            await anyio.sleep(0.01)
    known = _responders_of(node, topic)
    if not known >= set(ids):
        missing = sorted(name for id_, name in ids.items() if id_ not in known)
        raise AssertionError(
            f"node {node.name}'s peers() never listed {', '.join(missing)} as serving "
            f"{topic!r} within {limit:g} s (an emitter announces a new responder at once in "
            f"its '<3' heartbeat; peers() shows it in Peer.responds){why}"
        )


async def _request(node: Node, topic: str, data: Any = None, **options: Any) -> Any:
    """``node.bus.request(...)`` that must be answered; any exception fails the check."""
    timeout = options.pop("timeout", _request_timeout())
    try:
        return await node.bus.request(topic, data, timeout=timeout, **options)
    except Exception as exc:
        raise AssertionError(
            f"node {node.name}: request({topic!r}, {data!r:.60}) raised "
            f"{type(exc).__name__}: {exc}; a responder serves it, so it must be answered"
        ) from exc


async def _expect_remote_error(
    node: Node, topic: str, data: Any, *, responder: Node, kind: str, message: str
) -> None:
    """A request whose responder fails must raise ``RemoteError`` with its type and message."""
    try:
        reply = await node.bus.request(topic, data, timeout=_request_timeout())
    except RemoteError as exc:
        problems = []
        if exc.type != kind:
            problems.append(f".type is {exc.type!r}, expected {kind!r}")
        if message not in exc.message:
            problems.append(f".message is {exc.message!r}, expected it to contain {message!r}")
        if exc.topic != topic:
            problems.append(f".topic is {exc.topic!r}")
        if exc.responder != responder.bus.id:
            problems.append(
                f".responder is {responder.cluster.name_of(exc.responder)}, expected node "
                f"{responder.name}"
            )
        if exc.service != responder.bus.service:
            problems.append(f".service is {exc.service!r}, expected {responder.bus.service!r}")
        if problems:
            raise AssertionError(
                f"node {node.name}: the RemoteError for {topic!r} is wrong: {'; '.join(problems)}"
            ) from exc
        return
    except Exception as exc:
        raise AssertionError(
            f"node {node.name}: request({topic!r}) raised {type(exc).__name__}: {exc}; a "
            f"responder that fails ({kind}) must make it raise RemoteError"
        ) from exc
    raise AssertionError(
        f"node {node.name}: request({topic!r}) returned {reply!r}, but its responder on node "
        f"{responder.name} failed ({kind}); the requester must get RemoteError"
    )


async def _expect_nobody(node: Node, topic: str, timeout: float) -> None:  # noqa: ASYNC109
    """A request nobody serves fails with NoResponders or RequestTimeout within ``timeout``."""
    started = time.perf_counter()
    try:
        reply = await node.bus.request(topic, {"node": node.name}, timeout=timeout)
    except (NoResponders, RequestTimeout) as exc:
        elapsed = time.perf_counter() - started
        if elapsed > timeout + NO_RESPONDER_SLACK:
            raise AssertionError(
                f"node {node.name}: request({topic!r}, timeout={timeout}) (nobody serves it) "
                f"raised {type(exc).__name__} only after {elapsed:.2f} s; it must give up "
                "within its timeout"
            ) from exc
        if topic not in str(exc):
            raise AssertionError(f"{type(exc).__name__} does not name the topic: {exc}") from exc
        return
    except Exception as exc:
        raise AssertionError(
            f"node {node.name}: request({topic!r}) (nobody serves it) raised "
            f"{type(exc).__name__}: {exc}; expected NoResponders or RequestTimeout"
        ) from exc
    raise AssertionError(
        f"node {node.name}: request({topic!r}) returned {reply!r}, yet nobody serves it"
    )


def _no_request_traffic(recorders: list[Recorder]) -> None:
    """Request/reply travels on reserved topics that listeners (even bare ``*``) never see."""
    for recorder in recorders:
        leaked = sorted({e.topic for e in recorder.events if e.topic.startswith(REQUEST_PREFIXES)})
        if leaked:
            raise AssertionError(
                f"{recorder.label} received request/reply traffic on {leaked[:5]!r}; "
                "requests and replies must never reach listeners"
            )


async def check_request_reply(make_url: MakeURL, *, count: int = 40) -> None:
    """Request/reply: one responder answers each request, whichever way the transport picks.

    B and C serve ``rr.svc``; A sends ``count`` requests one by one and ``count // 2`` at
    once: each must be answered with its own data, and both responders must answer some
    (round robin by the requester, or a server's pick). A responder that raises gives the
    requester a ``RemoteError`` with its type, message, id and service, is reported on its
    own node, and answers the next request. A topic nobody serves fails with
    ``NoResponders`` or ``RequestTimeout`` within the timeout. A's own responder answers
    A's requests (B serves that topic too). A typed responder gets converted data and turns
    invalid data into ``RemoteError`` type ``ValidationError``; ``request(type=)`` converts
    the reply. Listeners on bare ``*`` and ``>`` never see any of this traffic.
    """
    url, capabilities = fresh_url(make_url)
    cluster = Cluster(url)
    cluster.provokes(ResponderError, InvalidEventError)  # a raising and a typed responder
    a = cluster.node("A")
    b = cluster.node("B", service="conformance-b")
    c = cluster.node("C", service="conformance-c", echo=False)
    nodes = [a, b, c]
    spies = [cluster.recorder(node, pattern) for node in nodes for pattern in ("*", ">")]
    svc = "rr.svc"

    def echo(node: Node) -> Callable[[DistributedEvent], Any]:
        def respond(event: DistributedEvent) -> Any:
            return {"node": node.name, "echo": event.data}

        respond.__qualname__ = f"respond@{node.name}"
        return respond

    async def echo_async(event: DistributedEvent) -> Any:
        await anyio.lowlevel.checkpoint()
        return {"node": "C", "echo": event.data}

    def refuse(event: DistributedEvent) -> Any:
        if isinstance(event.data, dict) and event.data.get("fail"):
            raise Refused(f"conformance: refused {event.data.get('n')} on purpose")
        return {"node": "B", "echo": event.data}

    def typed(event: DistributedEvent) -> Any:
        quote = event.data
        return {
            "converted": isinstance(quote, Quote),
            "ticker": getattr(quote, "ticker", None),
            "price": getattr(quote, "price", None),
        }

    asked = 0
    async with cluster:
        b.bus.responder(svc, echo(b))
        c.bus.responder(svc, echo_async)
        b.bus.responder("rr.fail", refuse)
        b.bus.responder("rr.typed", typed, type=Quote)
        a.bus.responder("rr.local", echo(a))
        b.bus.responder("rr.local", echo(b))
        for node in nodes:
            await node.bus.listening()
        await _expect_known_responders(a, svc, {b.bus.id: "B", c.bus.id: "C"})

        answered: Counter[str] = Counter()

        def check_reply(n: int, reply: Any) -> None:
            want = numbered("A", n)
            if not isinstance(reply, dict) or reply.get("echo") != want:
                raise AssertionError(
                    f"request #{n} on {svc!r} from node A got {reply!r}; the responder echoes "
                    f"the request's data, so it must carry {want!r}"
                )
            if reply.get("node") not in ("B", "C"):
                raise AssertionError(f"request #{n} answered by {reply.get('node')!r}")
            answered[reply["node"]] += 1

        for n in range(1, count + 1):
            check_reply(n, await _request(a, svc, numbered("A", n)))
        asked += count

        async def one(n: int) -> None:
            check_reply(n, await _request(a, svc, numbered("A", n)))

        async with anyio.create_task_group() as tg:
            for n in range(count + 1, count + count // 2 + 1):
                tg.start_soon(one, n)
        asked += count // 2
        if len(answered) < 2:
            raise AssertionError(
                f"{sum(answered.values())} requests on {svc!r} from node A were all answered "
                f"by node {next(iter(answered))}; B and C both serve it (known to A from "
                "presence), so both must get some (round robin, or the server's pick)"
            )

        await _expect_remote_error(
            a,
            "rr.fail",
            {"fail": True, "n": 1},
            responder=b,
            kind="Refused",
            message="conformance: refused 1 on purpose",
        )
        asked += 1
        await b.expect_problems(ListenerError, 1, "its responder raised and must be reported")
        after = await _request(a, "rr.fail", {"n": 2})
        asked += 1
        if after != {"node": "B", "echo": {"n": 2}}:
            raise AssertionError(
                f"after raising, node B's responder answered {after!r}; it must keep serving"
            )
        if b.bus.stats().listener_errors != 1:
            raise AssertionError(
                f"node B: stats().listener_errors = {b.bus.stats().listener_errors} after its "
                "responder raised once"
            )

        for _ in range(5):
            reply = await _request(a, "rr.local", {"n": 0})
            asked += 1
            if not isinstance(reply, dict) or reply.get("node") != "A":
                raise AssertionError(
                    f"node A asked 'rr.local', which A itself serves (B too), and got {reply!r}; "
                    "a responder on the requesting emitter answers its own requests"
                )

        plain = await _request(a, "rr.typed", {"ticker": "ACME", "price": 2})
        asked += 1
        if plain != {"converted": True, "ticker": "ACME", "price": 2.0}:
            raise AssertionError(
                f"a responder with type=Quote got {{'ticker': 'ACME', 'price': 2}} and "
                f"answered {plain!r}; it must get the data converted to Quote"
            )
        quote = await _request(a, "rr.typed", {"ticker": "ACME", "price": 2.5}, type=Quote)
        asked += 1
        if quote != Quote("ACME", 2.5):
            raise AssertionError(f"request(..., type=Quote) returned {quote!r}, not a Quote")
        await _expect_remote_error(
            a,
            "rr.typed",
            {"ticker": "ACME", "price": "high"},
            responder=b,
            kind="ValidationError",
            message="$.price",
        )
        asked += 1
        if b.bus.stats().invalid != 1:
            raise AssertionError(
                f"node B: stats().invalid = {b.bus.stats().invalid} after its typed responder "
                "got one invalid request"
            )

        await _expect_nobody(a, "rr.nobody", 1.0)
        if capabilities.balances_requests:
            asked += 1  # sent, and the server said nobody serves it; elsewhere a probe found
            # nobody and the request itself never left
        got = a.bus.stats().requests
        if got != asked:
            raise AssertionError(
                f"node A: stats().requests = {got} after {asked} requests (probes not counted)"
            )
    _no_request_traffic(spies)


async def check_survey(make_url: MakeURL) -> None:
    """Surveys: every responder of a topic answers, one reply per emitter.

    A (the surveyor), B and C serve ``sv.t`` (B also ``sv.*``, registered later: an emitter
    answers with its first matching responder); D serves nothing. ``survey(expect=3)``
    must return the three replies (distinct senders, their service names and answers) well
    before its timeout; without ``expect`` a survey waits its whole timeout and still has
    exactly three; with ``expect=2`` it returns early. A raising responder's ``Reply``
    carries ``error`` (a ``RemoteError``); a topic nobody serves gives ``[]`` by the timeout.
    """
    url, capabilities = fresh_url(make_url)
    cluster = Cluster(url)
    cluster.provokes(ResponderError)
    a = cluster.node("A", service="svc-a")
    b = cluster.node("B", service="svc-b")
    c = cluster.node("C", service="svc-c", echo=False)
    d = cluster.node("D")
    responders = [a, b, c]
    spies = [cluster.recorder(node, "*") for node in (*responders, d)]

    def answer(node: Node, via: str) -> Callable[[DistributedEvent], Any]:
        def respond(event: DistributedEvent) -> Any:
            return {"node": node.name, "via": via, "echo": event.data}

        return respond

    def fail(event: DistributedEvent) -> Any:
        raise Refused("conformance: survey refused on purpose")

    for node in responders:
        node.bus.responder("sv.t", answer(node, "sv.t"))
    b.bus.responder("sv.fail", fail)
    c.bus.responder("sv.fail", answer(c, "sv.fail"))
    b.bus.responder("sv.*", answer(b, "sv.*"))  # matches sv.t too, but registered after it
    ids = {node.bus.id: node for node in responders}
    limit = current_deadline()

    def verify(replies: list[Reply], what: str, want: set[str]) -> None:
        senders = [cluster.name_of(reply.sender) for reply in replies]
        if len(set(senders)) != len(senders):
            raise AssertionError(
                f"{what} got replies from {senders}: each emitter must answer a survey once "
                "(with its first matching responder)"
            )
        if not set(senders) <= want:
            raise AssertionError(f"{what} got replies from {senders}; only {sorted(want)} serve it")
        for reply in replies:
            node = ids[reply.sender]
            expected = {"node": node.name, "via": "sv.t", "echo": {"n": 1}}
            if reply.data != expected or reply.error is not None:
                raise AssertionError(
                    f"{what}: node {node.name}'s reply is {reply!r}; expected data {expected!r}"
                )
            if reply.service != node.bus.service:
                raise AssertionError(
                    f"{what}: node {node.name}'s reply says service {reply.service!r}, "
                    f"expected {node.bus.service!r}"
                )

    everyone = {"A", "B", "C"}
    async with cluster:
        started = time.perf_counter()
        replies = await a.bus.survey("sv.t", {"n": 1}, timeout=limit, expect=3)
        elapsed = time.perf_counter() - started
        verify(replies, "survey('sv.t', expect=3)", everyone)
        if len(replies) != 3:
            raise AssertionError(
                f"survey('sv.t', expect=3, timeout={limit:g}) returned after {elapsed:.2f} s "
                f"with replies from {sorted(cluster.name_of(r.sender) for r in replies)}; "
                "A, B and C serve it"
            )
        if elapsed > limit / 2:
            raise AssertionError(
                f"survey(expect=3) took {elapsed:.2f} s of its {limit:g} s timeout; it must "
                "return as soon as three replies are in"
            )

        whole = 1.5
        started = time.perf_counter()
        replies = await a.bus.survey("sv.t", {"n": 1}, timeout=whole)
        elapsed = time.perf_counter() - started
        verify(replies, f"survey('sv.t', timeout={whole})", everyone)
        if len(replies) != 3:
            raise AssertionError(
                f"survey('sv.t', timeout={whole}) got replies from "
                f"{sorted(cluster.name_of(r.sender) for r in replies)}; A, B and C serve it"
            )
        if elapsed < whole * 0.9:
            raise AssertionError(
                f"survey('sv.t', timeout={whole}) without expect returned after "
                f"{elapsed:.2f} s; it must collect replies for its whole timeout"
            )

        started = time.perf_counter()
        replies = await b.bus.survey("sv.t", {"n": 1}, timeout=limit, expect=2)
        elapsed = time.perf_counter() - started
        verify(replies, "survey('sv.t', expect=2) from B", everyone)
        if len(replies) < 2 or elapsed > limit / 2:
            raise AssertionError(
                f"survey('sv.t', expect=2, timeout={limit:g}) from B returned {len(replies)} "
                f"replies after {elapsed:.2f} s; it must return once two are in"
            )

        replies = await d.bus.survey("sv.fail", None, timeout=limit, expect=2)
        by_name = {cluster.name_of(reply.sender): reply for reply in replies}
        if set(by_name) != {"B", "C"}:
            raise AssertionError(
                f"survey('sv.fail', expect=2) from D got replies from {sorted(by_name)}; "
                "B (raising) and C serve it"
            )
        failed = by_name["B"]
        error = failed.error
        if (
            not isinstance(error, RemoteError)
            or error.type != "Refused"
            or "survey refused on purpose" not in error.message
            or error.responder != b.bus.id
            or failed.data is not None
        ):
            raise AssertionError(
                f"node B's responder raised Refused, yet its survey reply is {failed!r}; it "
                "must carry error=RemoteError (type 'Refused', its message) and data None"
            )
        if by_name["C"].error is not None or by_name["C"].data != {
            "node": "C",
            "via": "sv.fail",
            "echo": None,
        }:
            raise AssertionError(f"node C's survey reply is {by_name['C']!r}")
        await b.expect_problems(ListenerError, 1, "its responder raised in a survey")

        nobody = 0.5
        started = time.perf_counter()
        replies = await a.bus.survey("nobody.sv", {"n": 1}, timeout=nobody)
        elapsed = time.perf_counter() - started
        if replies:
            raise AssertionError(f"survey('nobody.sv') got {replies!r}; nobody serves it")
        if elapsed > nobody + NO_RESPONDER_SLACK:
            raise AssertionError(
                f"survey('nobody.sv', timeout={nobody}) returned after {elapsed:.2f} s; it "
                "must return by its timeout"
            )
        if elapsed < nobody * 0.9 and not capabilities.balances_requests:
            raise AssertionError(
                f"survey('nobody.sv', timeout={nobody}) returned [] after {elapsed:.2f} s; "
                "without word from the transport that nobody serves it, it waits its timeout"
            )
    _no_request_traffic(spies)


async def check_requests_across_processes(make_url: MakeURL, *, count: int = 30) -> None:
    """Request/reply across processes: responders in two peer processes, the requester here.

    Needs ``capabilities.crosses_processes``. Peers P1 and P2 serve ``xreq.t`` (answering
    with their pid and the request's data); this process's node A sends ``count`` requests,
    which must all be answered, by both peers; a survey must get one reply from each, with
    their pids and service names. P1's raising responder gives A a ``RemoteError``. Then a
    peer is the requester: P2 asks A's responder and gets its answer.
    """
    url, capabilities = fresh_url(make_url)
    if not capabilities.crosses_processes:
        raise CheckSkipped("the transport does not cross processes (crosses_processes=False)")
    from ..processes import spawn_peer

    cluster = Cluster(url)
    a = cluster.node("A")
    a.bus.responder("xreq.back", lambda event: {"node": "A", "echo": event.data})
    backend = current_backend()
    topic = "xreq.t"
    async with (
        cluster,
        spawn_peer(url, name="P1", backend=backend) as p1,
        spawn_peer(url, name="P2", backend=backend, echo=False) as p2,
    ):
        peers = {p1.id: p1, p2.id: p2}
        for peer in peers.values():
            cluster.alias(peer.id, peer.name)
            await peer.respond(topic)
        await p1.respond("xreq.fail", mode="raise")
        await _expect_known_responders(a, topic, {p.id: p.name for p in peers.values()})
        pids: Counter[int] = Counter()
        for n in range(1, count + 1):
            reply = await _request(a, topic, {"n": n})
            if not isinstance(reply, dict) or reply.get("echo") != {"n": n}:
                raise AssertionError(
                    f"request #{n} on {topic!r} got {reply!r}; the peer echoes its data"
                )
            pids[reply.get("pid", 0)] += 1
        if set(pids) != {p1.pid, p2.pid}:
            raise AssertionError(
                f"{count} requests on {topic!r} were answered by processes {dict(pids)}; both "
                f"peers (pids {p1.pid}, {p2.pid}) serve it and must each get some"
            )
        replies = await a.bus.survey(topic, {"n": 0}, timeout=current_deadline(), expect=2)
        got = sorted(
            (cluster.name_of(r.sender), r.service, (r.data or {}).get("pid")) for r in replies
        )
        want = sorted((p.name, f"conformance-{p.name}", p.pid) for p in peers.values())
        if got != want:
            raise AssertionError(
                f"survey({topic!r}, expect=2) got (sender, service, pid) {got}; expected {want}"
            )
        try:
            reply = await a.bus.request("xreq.fail", None, timeout=_request_timeout())
        except RemoteError as exc:
            if (
                exc.type != "RuntimeError"
                or exc.responder != p1.id
                or "on purpose" not in exc.message
            ):
                raise AssertionError(
                    f"peer P1's responder raised RuntimeError; the RemoteError says {exc!r} "
                    f"(type {exc.type!r}, responder {cluster.name_of(exc.responder)})"
                ) from exc
        except Exception as exc:
            raise AssertionError(
                f"request('xreq.fail') raised {type(exc).__name__}: {exc}; peer P1's responder "
                "raised, so A must get RemoteError"
            ) from exc
        else:
            raise AssertionError(f"request('xreq.fail') returned {reply!r}; P1's responder raised")
        answer = await p2.ask("xreq.back", {"from": "P2"}, timeout=_request_timeout())
        if answer.get("reply") != {"node": "A", "echo": {"from": "P2"}}:
            raise AssertionError(
                f"peer P2 asked A's responder on 'xreq.back' and got {answer}; expected A's "
                "answer echoing P2's data"
            )
