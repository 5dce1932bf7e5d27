"""Invalid API input raises a clear error where it is given (issue 8, item 3): the one table.

Each row: what is called, the exception type, and a regex its message must match, naming
the problem and, where there is one, the fix (the known schemes or options, the valid
range, the call to use instead). Most rows raise at the call itself (``connect()``,
``bus.on()``, ``await bus.emit()``); the rows marked "open" raise when the emitter opens,
because only then does the transport try the address.

Many of these checks exist scattered across the other tests; this is the single list
docs/reliability.md points to.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread
import pytest

import nanomitter
from nanomitter import DistributedEventEmitter, NanomitterError
from nanomitter.core.codecs import UnserializableDataError, get_codec
from nanomitter.core.errors import (
    BusClosedError,
    InvalidOptionError,
    UnknownOptionError,
    UnknownSchemeError,
    UnsupportedBackendError,
)
from nanomitter.core.payloads import get_payload_codec
from nanomitter.transports.nats import NoServersError
from nanomitter.transports.nng import NoHubError as NngNoHubError
from nanomitter.transports.zmq import NoHubError as ZmqNoHubError
from nats_support import NatsServer, nats_server
from peers import free_port
from zmq_support import free_port_pair

__all__ = ["nats_server"]  # a fixture: imported so that pytest finds it

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the table checks arguments, not I/O; NATS needs asyncio anyway


@dataclass
class Env:
    """What a row may call: an unopened emitter, open ones (msgpack and JSON memory buses; a
    peer on the msgpack bus has a responder for ``svc``), and a closed one."""

    new: DistributedEventEmitter
    bus: DistributedEventEmitter
    json_bus: DistributedEventEmitter
    peer: DistributedEventEmitter
    closed: DistributedEventEmitter


Action = Callable[[Env], Awaitable[object]]


@dataclass(frozen=True)
class Bad:
    where: str
    """The transport (or "core") and when it raises: "call" or "open"."""
    what: str
    action: Action
    error: type[BaseException]
    message: str


def call(function: Callable[[Env], object]) -> Action:
    """Call ``function(env)``, awaiting what it returns if that is awaitable."""

    async def action(env: Env) -> object:
        result = function(env)
        if inspect.isawaitable(result):
            result = await result
        return result

    return action


def url(text: Any, **options: Any) -> Action:
    """``connect(text, **options)``: the URL and options are checked at once."""
    return call(lambda env: nanomitter.connect(text, **options))


def opens(text: str) -> Action:
    async def action(env: Env) -> object:
        with anyio.fail_after(20):
            async with nanomitter.connect(text, heartbeat_interval=0):
                pass
        return None

    return action


def on(pattern: Any, listener: Any = print, **options: Any) -> Action:
    return call(lambda env: env.new.on(pattern, listener, **options))


def responder(topic: str, fn: Any = print, **options: Any) -> Action:
    return call(lambda env: env.new.responder(topic, fn, **options))


def emit(topic: Any, data: Any = 1, *, json: bool = False) -> Action:
    return call(lambda env: (env.json_bus if json else env.bus).emit(topic, data))


def request(topic: str, data: Any = 1, **options: Any) -> Action:
    return call(lambda env: env.bus.request(topic, data, **options))


def survey(topic: str, data: Any = 1, **options: Any) -> Action:
    return call(lambda env: env.bus.survey(topic, data, **options))


def cyclic() -> list[object]:
    loop: list[object] = []
    loop.append(loop)
    return loop


def unused_port() -> int:
    return free_port()


KNOWN_SCHEMES = r"known schemes: .*memory://.*nats://.*tcp://.*zmq\+tcp://"
CLOSED = r"the emitter is closed"
NOT_OPEN = r"the emitter is not open yet; use 'async with connect\(\.\.\.\)'"
REQUEST_API = r"use bus\.request\(\), bus\.survey\(\) and bus\.responder\(\) instead"
CONCRETE = r"wildcards \('\*', '>'\) are for listener patterns, not emit; emit to a concrete"
SERIALISABLE = r"send dicts, lists, str, int, float, bool, None"
PORT = r"tcp:// port '{port}' must be a number in 1\.\.65535"
NOT_A_TYPE = r"type=5 is not a type msgspec can convert (data )?to .*; use a msgspec Struct"
TIMEOUT = r"timeout must be a number of seconds > 0, got "
EXPECT = r"expect must be >= 1 \(None waits the whole timeout\), got "
TLS = "tls+tcp://127.0.0.1:5000?tls_cert=/nope&tls_key=/nope&tls_ca=/nope"
NNG = "tcp://127.0.0.1:5000"
ZMQ = "zmq+tcp://127.0.0.1:5000"
NATS = "nats://127.0.0.1"


def unknown_option(scheme: str, known: str) -> str:
    return rf"unknown option\(s\) 'bogus' for {scheme}:// ; known options: .*{known}"


def not_serialisable(codec: str, detail: str) -> str:
    return rf"cannot emit on 'a\.b': data is not serialisable by the {codec} codec \({detail}"


# fmt: off
ROWS: list[Bad] = [
    # ------------------------------------------------------------------ URLs, every transport
    Bad("core call", "no scheme", url("127.0.0.1:55555"), ValueError,
        r"has no scheme; write it like 'memory://name', 'tcp://127\.0\.0\.1:55555'"),
    Bad("core call", "unknown scheme", url("foo://x"), UnknownSchemeError,
        r"unknown bus URL scheme 'foo'; " + KNOWN_SCHEMES),
    Bad("core call", "URL not a str", url(5), TypeError, r"bus URL must be a str, got int"),
    Bad("core call", "option given twice", url("memory://x?capacity=1&capacity=2"),
        InvalidOptionError, r"option 'capacity' given twice"),
    Bad("core call", "unknown keyword option", url("memory://x", bogus=1), UnknownOptionError,
        unknown_option("memory", "capacity, codec, max_frame_bytes")),
    Bad("core call", "listener_queue_size=0", url("memory://x", listener_queue_size=0),
        ValueError, r"listener_queue_size must be >= 1, got 0"),
    Bad("core call", "listener_queue_size='5'", url("memory://x", listener_queue_size="5"),
        TypeError, r"listener_queue_size must be an int"),
    Bad("core call", "unknown codec (library call)", call(lambda env: get_codec("pickle")),
        ValueError, r"unknown codec 'pickle'; known codecs: json, msgpack"),
    Bad("core call", "unknown payload codec (library call)",
        call(lambda env: get_payload_codec("pickle")), ValueError,
        r"unknown codec 'pickle'; known codecs: json, msgpack"),
    # ------------------------------------------------------------------ memory://
    Bad("memory call", "no bus name", url("memory://"), ValueError,
        r"memory:// needs a bus name, e\.g\. 'memory://orders'"),
    Bad("memory call", "unknown option", url("memory://x?bogus=1"), UnknownOptionError,
        unknown_option("memory", "capacity")),
    Bad("memory call", "unknown codec", url("memory://x", codec="pickle"), InvalidOptionError,
        r"option codec='pickle' is not one of msgpack, json, none"),
    Bad("memory call", "capacity=0", url("memory://x?capacity=0"), InvalidOptionError,
        r"option capacity=0 must be >= 1"),
    Bad("memory call", "max_frame_bytes=abc", url("memory://x?max_frame_bytes=abc"),
        InvalidOptionError, r"option max_frame_bytes='abc' must be an integer"),
    # ------------------------------------------------------------------ nng
    Bad("nng call", "unknown option", url(NNG + "?bogus=1"), UnknownOptionError,
        unknown_option("tcp", "buffer, codec, connect_timeout, election_ms")),
    Bad("nng call", "unknown codec", url(NNG + "?codec=pickle"), InvalidOptionError,
        r"option codec='pickle' is not one of msgpack, json"),
    Bad("nng call", "role=boss", url(NNG + "?role=boss"), InvalidOptionError,
        r"option role='boss' is not one of auto, hub, node"),
    Bad("nng call", "buffer=0", url(NNG + "?buffer=0"), InvalidOptionError,
        r"option buffer=0 must be >= 1"),
    Bad("nng call", "buffer above nng's maximum", url(NNG + "?buffer=8193"), InvalidOptionError,
        r"option buffer=8193 must be <= 8192"),
    Bad("nng call", "max_frame_bytes=10", url(NNG + "?max_frame_bytes=10"), InvalidOptionError,
        r"option max_frame_bytes=10 must be >= 64"),
    Bad("nng call", "linger_ms=x", url(NNG + "?linger_ms=x"), InvalidOptionError,
        r"option linger_ms='x' must be an integer"),
    Bad("nng call", "connect_timeout=soon", url(NNG + "?connect_timeout=soon"),
        InvalidOptionError, r"option connect_timeout='soon' must be a number"),
    Bad("nng call", "tls_* on tcp://", url(NNG + "?tls_ca=/x"), InvalidOptionError,
        r"tls_\* options need a tls\+tcp:// URL"),
    Bad("nng call", "tls+tcp:// without files", url("tls+tcp://127.0.0.1:5000"),
        InvalidOptionError, r"tls\+tcp:// needs tls_cert, tls_key, tls_ca \(PEM file paths\)"),
    Bad("nng call", "tls file missing", url(TLS), InvalidOptionError,
        r"tls_cert: no such file '/nope'"),
    Bad("nng call", "no port", url("tcp://127.0.0.1"), InvalidOptionError,
        r"tcp:// needs HOST:PORT \(e\.g\. tcp://127\.0\.0\.1:\d+\), got '127\.0\.0\.1'"),
    Bad("nng call", "port 99999", url("tcp://127.0.0.1:99999"), InvalidOptionError,
        PORT.format(port="99999")),
    Bad("nng call", "port abc", url("tcp://127.0.0.1:abc"), InvalidOptionError,
        PORT.format(port="abc")),
    Bad("nng open", "role=node, no hub",
        opens(f"tcp://127.0.0.1:{unused_port()}?role=node&connect_timeout=0.3"), NngNoHubError,
        r"no hub answered at tcp://127\.0\.0\.1:\d+ within 0\.3 s; start one \(role=hub or "
        r"role=auto\), or check the address"),
    Bad("nng open", "ipc:// without a path", opens("ipc://"), NanomitterError,
        r"cannot become the hub at ipc://"),
    # ------------------------------------------------------------------ ZeroMQ
    Bad("zmq call", "unknown option", url(ZMQ + "?bogus=1"), UnknownOptionError,
        unknown_option(r"zmq\+tcp", "batch, codec, connect_timeout")),
    Bad("zmq call", "unknown codec", url(ZMQ + "?codec=pickle"), InvalidOptionError,
        r"option codec='pickle' is not one of msgpack, json"),
    Bad("zmq call", "no port", url("zmq+tcp://127.0.0.1"), InvalidOptionError,
        r"zmq\+tcp:// needs HOST:PORT \(e\.g\. zmq\+tcp://127\.0\.0\.1:5560\), got '127"),
    Bad("zmq call", "port 65535", url("zmq+tcp://127.0.0.1:65535"), InvalidOptionError,
        r"port '65535' must be a number in 1\.\.65534 \(subscribers use PORT\+1\)"),
    Bad("zmq call", "port 0", url("zmq+tcp://127.0.0.1:0"), InvalidOptionError,
        r"port '0' must be a number in 1\.\.65534"),
    Bad("zmq call", "ipc without a path", url("zmq+ipc://"), InvalidOptionError,
        r"zmq\+ipc:// needs a path, e\.g\. zmq\+ipc:///tmp/bus"),
    Bad("zmq call", "hwm=0", url(ZMQ + "?hwm=0"), InvalidOptionError,
        r"option hwm=0 must be >= 1"),
    Bad("zmq call", "role=x", url(ZMQ + "?role=x"), InvalidOptionError,
        r"option role='x' is not one of auto, hub, node"),
    Bad("zmq call", "send_timeout_ms=-5", url(ZMQ + "?send_timeout_ms=-5"), InvalidOptionError,
        r"option send_timeout_ms=-5 must be >= 0"),
    Bad("zmq call", "bad CURVE key", url(ZMQ + "?curve_server_key=zz"), InvalidOptionError,
        r"curve_server_key must be a CURVE key: 64 hex digits or 40 Z85"),
    Bad("zmq open", "role=node, no hub",
        opens(f"zmq+tcp://127.0.0.1:{free_port_pair()}?role=node&connect_timeout=0.3"),
        ZmqNoHubError, r"no hub answered at zmq\+tcp://127\.0\.0\.1:\d+ within 0\.3 s"),
    # ------------------------------------------------------------------ NATS
    Bad("nats call", "unknown option", url(NATS + "?bogus=1"), UnknownOptionError,
        unknown_option("nats", "buffer, codec, connect_timeout, creds")),
    Bad("nats call", "unknown codec", url(NATS + "?codec=pickle"), InvalidOptionError,
        r"option codec='pickle' is not one of json, msgpack"),
    Bad("nats call", "port 99999", url(NATS + ":99999"), InvalidOptionError,
        r"bad port '99999' in NATS server '127\.0\.0\.1:99999'"),
    Bad("nats call", "port x", url(NATS + ":x"), InvalidOptionError,
        r"bad port 'x' in NATS server"),
    Bad("nats call", "comma in a password", url("nats://u:pa,ss@127.0.0.1"), InvalidOptionError,
        r"perhaps a ',' in the user name or password: percent-encode it as %2C"),
    Bad("nats call", "wildcard prefix", url(NATS + "?prefix=a.*"), InvalidOptionError,
        r"prefix='a\.\*' may not contain wildcards"),
    Bad("nats call", "empty-token prefix", url(NATS + "?prefix=a..b"), InvalidOptionError,
        r"prefix='a\.\.b': invalid pattern 'a\.\.b': empty token"),
    Bad("nats call", "inbox=0", url(NATS + "?inbox=0"), InvalidOptionError,
        r"option inbox=0 must be >= 1"),
    Bad("nats call", "ping_interval=0", url(NATS + "?ping_interval=0"), InvalidOptionError,
        r"option ping_interval=0\.0 must be >= 0\.1"),
    Bad("nats call", "creds file missing", url(NATS + "?creds=/nope"), InvalidOptionError,
        r"creds: no such file '/nope'"),
    Bad("nats call", "tls file missing", url(NATS + "?tls_cert=/nope"), InvalidOptionError,
        r"tls_cert: no such file '/nope'"),
    Bad("nats call", "different credentials per server", url("nats://a:b@h1,c:d@h2"),
        InvalidOptionError, r"every server in a NATS URL must carry the same credentials"),
    Bad("nats call", "a ZeroMQ server in the list", url("nats://h1,zmq+tcp://h2"),
        InvalidOptionError, r"each server is host:port, nats://host:port or tls://host:port"),
    Bad("nats open", "no server there",
        opens(f"nats://u:secret@127.0.0.1:{unused_port()}?connect_timeout=0.5"), NoServersError,
        r"cannot reach a NATS server at nats://u:\*\*\*@127\.0\.0\.1:\d+: .* Is nats-server "
        r"running there"),
    # ------------------------------------------------------------------ listeners, responders
    Bad("core call", "listener not callable", on("a", 5), TypeError,
        r"listener must be callable, got 5"),
    Bad("core call", "pattern not a str", on(5), TypeError, r"pattern must be a str, got int"),
    Bad("core call", "empty pattern", on(""), ValueError, r"invalid pattern '': it is empty"),
    Bad("core call", "empty token", on("a..b"), ValueError,
        r"invalid pattern 'a\.\.b': empty token \(leading, trailing or doubled '\.'\)"),
    Bad("core call", "'>' not last", on("a.>.b"), ValueError, r"'>' may only be the last token"),
    Bad("core call", "wildcard inside a token", on("a*"), ValueError,
        r"'\*' and '>' must be whole tokens"),
    Bad("core call", "whitespace in a pattern", on("a b"), ValueError,
        r"whitespace and NUL are not allowed"),
    Bad("core call", "'$' pattern", on("$x"), ValueError,
        r"topics starting with '\$' are reserved for transport control"),
    Bad("core call", "'<?' pattern", on("<?.x"), ValueError, REQUEST_API),
    Bad("core call", "'<!' pattern", on("<!.x"), ValueError, REQUEST_API),
    Bad("core call", "listener type= not a type", on("a", type=5), TypeError, NOT_A_TYPE),
    Bad("core call", "responder not callable", responder("a", 5), TypeError,
        r"responder must be callable, got 5"),
    Bad("core call", "responder pattern", responder("a..b"), ValueError, r"empty token"),
    Bad("core call", "responder concurrency=0", responder("a", concurrency=0), ValueError,
        r"concurrency must be >= 1, got 0"),
    Bad("core call", "second responder for a topic",
        call(lambda env: env.peer.responder("svc", print)), ValueError,
        r"already has a responder for 'svc'; remove it first with bus\.off_responder\('svc'\)"),
    Bad("core call", "responder type= not a type", responder("a", type=5), TypeError,
        NOT_A_TYPE),
    Bad("core call", "on_peer kind", call(lambda env: env.new.on_peer("x", print)),  # type: ignore[call-overload]
        ValueError, r"on_peer\(\) takes 'joined' or 'left', got 'x'"),
    Bad("core call", "subscribe capacity=0",
        call(lambda env: env.bus.subscribe("a", capacity=0).__aenter__()), ValueError,
        r"capacity must be >= 1, got 0"),
    # ------------------------------------------------------------------ emit
    Bad("core call", "emit 'a.*'", emit("a.*"), ValueError, CONCRETE),
    Bad("core call", "emit 'a.>'", emit("a.>"), ValueError, CONCRETE),
    Bad("core call", "emit '*'", emit("*"), ValueError, CONCRETE),
    Bad("core call", "emit 'a*b'", emit("a*b"), ValueError,
        r"'\*' and '>' may not appear inside a token"),
    Bad("core call", "emit ''", emit(""), ValueError, r"invalid topic '': it is empty"),
    Bad("core call", "emit 'a..b'", emit("a..b"), ValueError, r"empty token"),
    Bad("core call", "emit '.a'", emit(".a"), ValueError, r"empty token"),
    Bad("core call", "emit 'a.'", emit("a."), ValueError, r"empty token"),
    Bad("core call", "emit 'a b'", emit("a b"), ValueError, r"whitespace and NUL are not allowed"),
    Bad("core call", "emit NUL", emit("a\x00b"), ValueError, r"whitespace and NUL"),
    Bad("core call", "emit 1025 characters", emit("x" * 1025), ValueError,
        r"longer than 1024 characters"),
    Bad("core call", "emit '$x'", emit("$x"), ValueError, r"reserved for transport control"),
    Bad("core call", "emit '<?.x'", emit("<?.x"), ValueError, REQUEST_API),
    Bad("core call", "emit '<!.x'", emit("<!.x"), ValueError, REQUEST_API),
    Bad("core call", "emit a non-str topic", emit(5), TypeError,
        r"emit\(\) takes a topic string and data, or a mapping"),
    Bad("core call", "emit a mapping and data", emit({"topic": "a"}, 1), TypeError,
        r"emit\(\{'topic': \.\.\., 'data': \.\.\.\}\) takes no second argument"),
    Bad("core call", "emit object()", emit("a.b", object()), UnserializableDataError,
        not_serialisable("msgpack", "Encoding objects of type object") + ".*" + SERIALISABLE),
    Bad("core call", "emit an int over 64 bits", emit("a.b", 2**70), UnserializableDataError,
        not_serialisable("msgpack", "can't serialize ints")),
    Bad("core call", "emit a complex number", emit("a.b", {"z": 1j}), TypeError,
        not_serialisable("msgpack", "Encoding objects of type complex")),
    Bad("core call", "emit self-referential data", emit("a.b", cyclic()),
        UnserializableDataError, not_serialisable("msgpack", "maximum recursion depth")),
    Bad("core call", "emit tuple keys (json)", emit("a.b", {(1, 2): 3}, json=True),
        UnserializableDataError, not_serialisable("json", "Only dicts with str-like")),
    # ------------------------------------------------------------------ request, survey
    Bad("core call", "request a pattern", request("a.*"), ValueError, CONCRETE),
    Bad("core call", "request a reserved topic", request("<?.x"), ValueError, REQUEST_API),
    Bad("core call", "request object()", request("svc", object()), UnserializableDataError,
        r"cannot send a request on 'svc': data is not serialisable"),
    Bad("core call", "survey object()", survey("svc", object()), UnserializableDataError,
        r"cannot send a (request|survey) on 'svc': data is not serialisable"),
    Bad("core call", "request timeout=0", request("svc", timeout=0), ValueError, TIMEOUT + "0"),
    Bad("core call", "request timeout=-1", request("svc", timeout=-1), ValueError, TIMEOUT),
    Bad("core call", "request timeout=nan", request("svc", timeout=math.nan), ValueError,
        TIMEOUT + "nan"),
    Bad("core call", "request timeout='1'", request("svc", timeout="1"), TypeError, TIMEOUT),
    Bad("core call", "request timeout=None", request("svc", timeout=None), TypeError, TIMEOUT),
    Bad("core call", "survey timeout=0", survey("svc", timeout=0), ValueError, TIMEOUT + "0"),
    Bad("core call", "survey expect=0", survey("svc", expect=0), ValueError, EXPECT + "0"),
    Bad("core call", "survey expect=-1", survey("svc", expect=-1), ValueError, EXPECT + "-1"),
    Bad("core call", "survey expect='2'", survey("svc", expect="2"), TypeError,
        r"expect must be an int >= 1 or None, got '2'"),
    # ------------------------------------------------------------------ lifecycle
    Bad("core call", "emit before open", call(lambda env: env.new.emit("a", 1)),
        BusClosedError, r"cannot emit: " + NOT_OPEN),
    Bad("core call", "request before open", call(lambda env: env.new.request("a", 1)),
        BusClosedError, r"cannot send a request: " + NOT_OPEN),
    Bad("core call", "survey before open", call(lambda env: env.new.survey("a", 1)),
        BusClosedError, r"cannot send a survey: " + NOT_OPEN),
    Bad("core call", "listening() before open", call(lambda env: env.new.listening()),
        BusClosedError, r"cannot wait for listeners: " + NOT_OPEN),
    Bad("core call", "emit after close", call(lambda env: env.closed.emit("a", 1)),
        BusClosedError, r"cannot emit: " + CLOSED),
    Bad("core call", "request after close", call(lambda env: env.closed.request("a", 1)),
        BusClosedError, r"cannot send a request: " + CLOSED),
    Bad("core call", "on() after close", call(lambda env: env.closed.on("a", print)),
        BusClosedError, r"cannot add a listener: " + CLOSED),
    Bad("core call", "responder after close",
        call(lambda env: env.closed.responder("a", print)), BusClosedError,
        r"cannot add a responder: " + CLOSED),
    Bad("core open", "opened twice", call(lambda env: env.closed.__aenter__()), BusClosedError,
        r"an emitter can be opened once; call connect\(\) again"),
]
# fmt: on


def _id(row: Bad) -> str:
    return f"{row.where.split()[0]}-{row.what}"[:60]


@pytest.mark.parametrize("row", ROWS, ids=[_id(row) for row in ROWS])
async def test_bad_input_raises_a_clear_error(row: Bad) -> None:
    async with (
        nanomitter.connect("memory://bad-api", heartbeat_interval=0) as bus,
        nanomitter.connect("memory://bad-api", heartbeat_interval=0) as peer,
        nanomitter.connect("memory://bad-api-json?codec=json", heartbeat_interval=0) as json_bus,
    ):
        peer.responder("svc", lambda event: event.data)
        closed = nanomitter.connect("memory://bad-api-closed", heartbeat_interval=0)
        async with closed:
            pass
        env = Env(nanomitter.connect("memory://bad-api-new"), bus, json_bus, peer, closed)
        with pytest.raises(row.error, match=row.message):
            await row.action(env)
        assert bus.stats().emitted == 0  # nothing half-sent before the error


async def test_emit_of_unserialisable_data_on_nats_names_the_topic(
    nats_server: NatsServer,
) -> None:
    """NATS encodes the data alone (payload codecs): the same clear error, per codec."""
    for codec in ("json", "msgpack"):
        async with nanomitter.connect(f"{nats_server.url}?codec={codec}") as bus:
            for data in (object(), cyclic()):
                with pytest.raises(
                    UnserializableDataError,
                    match=rf"cannot emit on 'a\.b': data is not serialisable by the {codec} codec",
                ):
                    await bus.emit("a.b", data)
            assert bus.stats().emitted == 0


async def test_nats_on_trio_says_asyncio_only() -> None:
    async def main() -> None:
        async with nanomitter.connect(f"nats://127.0.0.1:{unused_port()}"):
            pass

    def on_trio() -> None:
        anyio.run(main, backend="trio")

    with pytest.raises(UnsupportedBackendError, match=r"runs on asyncio only .* use an nng"):
        await anyio.to_thread.run_sync(on_trio)


def test_the_table_covers_every_transport() -> None:
    """The per-transport row counts docs/reliability.md quotes."""
    counts: dict[str, int] = {}
    for row in ROWS:
        name = row.where.split()[0]
        counts[name] = counts.get(name, 0) + 1
    print({"rows": len(ROWS), **counts})
    assert {"core", "memory", "nng", "zmq", "nats"} <= set(counts)
