"""The foreign peers of the garbage-spray tests (issue 8), and the garbage they send.

Run as child processes by ``test_garbage_spray.py``::

    python spray_support.py valid URL        # a nanomitter emitter: numbered events on spray.valid
    python spray_support.py nng URL SECONDS  # a raw pynng Bus0 socket dialled to the hub
    python spray_support.py zmq URL SECONDS  # a raw pyzmq PUB socket on the proxy's XSUB side
    python spray_support.py nats URL SECONDS # a raw NATS protocol client (plain TCP)

Each prints ``ready`` once connected and starts on a ``go`` line on stdin. A sprayer sends
garbage as fast as it can for SECONDS, then prints one JSON line (``{"sent": N, "kinds":
{...}}``) and exits. The valid emitter emits about 1000 events a second until a ``finish``
line, then emits one last event (data ``{"last": true}``), closes and prints its JSON line.

Every garbage frame is bad by construction, so the receiver must count each one it gets
exactly once in ``decode_errors``: most fail in the frame decoder ("decoder" level); a few
decode into an envelope that the emitter rejects (an invalid topic, a malformed request:
"core" level). Nothing here decodes into an event a listener could see.
"""

from __future__ import annotations

import json
import os
import random
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

VALID_TOPIC = "spray.valid"
GARBAGE_TOPIC = "spray.garbage"
GARBAGE_SENDER = "sprayer"
"""The sender of the garbage envelopes that do decode (the receiver tells them apart by it)."""
MAX_FRAME_BYTES = 4096
"""The receiver's ``max_frame_bytes`` on nng and ZeroMQ: oversized frames stay cheap to send
(and below the 4x wire cap, above which nng and libzmq drop the sender's connection)."""
DEEP = 3000
"""Nesting depth of the deeply nested garbage (3 KB in msgpack, under MAX_FRAME_BYTES; the
decoder's recursion limit is about 1000)."""
VALID_RATE = 1000
"""Valid events per second, roughly (bursts of 10 every 10 ms)."""
SCRIPT = Path(__file__).resolve()
_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    """This process's resident set size, from /proc/self/statm."""
    fields = Path("/proc/self/statm").read_text().split()
    return int(fields[1]) * _PAGE


@dataclass(frozen=True)
class Garbage:
    kind: str
    frame: bytes
    level: str = "decoder"
    """Where the receiver rejects it: "decoder" (FrameDecoder) or "core" (the emitter)."""


def _envelope(**fields: Any) -> bytes:
    return msgspec.msgpack.encode(fields)


def _valid_frame(rng: random.Random) -> bytes:
    data = {"n": rng.randrange(1 << 30), "text": "x" * rng.randrange(40)}
    return _envelope(topic=GARBAGE_TOPIC, data=data, fromLeader=False, sender=GARBAGE_SENDER, seq=0)


def msgpack_garbage(seed: int = 8, count: int = 2000) -> list[Garbage]:
    """A shuffled pool of bad msgpack frames for the nng and ZeroMQ receivers."""
    rng = random.Random(seed)
    decoder = msgspec.msgpack.Decoder()
    pool: list[Garbage] = []

    def random_bytes() -> Garbage:
        while True:
            frame = rng.randbytes(rng.randrange(2, 64))
            try:
                value = decoder.decode(frame)
            except msgspec.DecodeError:
                return Garbage("random", frame)
            if not isinstance(value, dict | list):  # a scalar: never an envelope
                return Garbage("random", frame)

    wrong_types = [
        _envelope(topic=5, data=1),
        _envelope(topic=["a"], data=1),
        _envelope(topic=None),
        _envelope(topic="t", seq="seven"),
        _envelope(topic="t", seq=1.5),
        _envelope(topic="t", seq=True),
        _envelope(topic="t", sender=7),
        _envelope(topic="t", fromLeader="yes"),
        _envelope(data=1, sender=GARBAGE_SENDER),  # no topic
        msgspec.msgpack.encode([1, 2, 3]),
        msgspec.msgpack.encode("just a string"),
        msgspec.msgpack.encode(None),
        msgspec.msgpack.encode([{"topic": "t"}, 5]),
    ]
    prefix = b"\x82\xa5topic\xadspray.garbage\xa4data"  # {"topic": ..., "data": <next>}
    huge = [
        b"\xdb\xff\xff\xff\xff" + b"abc",  # str 32 claiming 4 GiB
        b"\xc6\xff\xff\xff\xff" + b"abc",  # bin 32
        b"\xdd\xff\xff\xff\xff" + b"\x01\x02",  # array 32
        b"\xdf\xff\xff\xff\xff" + b"\xa1k\x01",  # map 32
        b"\xc9\xff\xff\xff\xff\x01" + b"abc",  # ext 32
        prefix + b"\xdb\xff\xff\xff\xff" + b"abc",
        prefix + b"\xc6\xff\xff\xff\xff" + b"abc",
        prefix + b"\xdd\xff\xff\xff\xff" + b"\x01",
        prefix + b"\xdf\xff\xff\xff\xff" + b"\x01",
    ]
    deep = [
        prefix + b"\x91" * DEEP + b"\xc0",  # data: [[[...[None]...]]]
        prefix + b"\x81\xa1k" * DEEP + b"\xc0",  # data: {"k": {"k": ...}}
    ]
    bad_topics = [
        _envelope(topic=topic, data=1, sender=GARBAGE_SENDER)
        for topic in ("", "a..b", ".a", "a.", "x y", "a.*", "a.>", "*", "t\x00", "z" * 1100)
    ] + [
        _envelope(topic="<?.spray.svc", data=5, sender=GARBAGE_SENDER),  # request: not a map
        _envelope(topic="<?.spray.svc", data={"to": ""}, sender=GARBAGE_SENDER),  # no id
        _envelope(topic="<??.spray.svc", data={"id": "x"}, sender=GARBAGE_SENDER),
        _envelope(topic="<??.spray.svc", data="no", sender=GARBAGE_SENDER),  # not a map
        # (a reply may be anything: a foreign responder answers with a bare body)
    ]
    for index in range(count):
        roll = rng.random()
        if roll < 0.30:
            pool.append(random_bytes())
        elif roll < 0.45:
            frame = _valid_frame(rng)
            pool.append(Garbage("truncated", frame[: rng.randrange(len(frame))]))
        elif roll < 0.52:
            mutable = bytearray(_valid_frame(rng))
            mutable[0] = 0x86  # a map of 6 pairs that holds 5: truncated
            pool.append(Garbage("bad_header", bytes(mutable)))
        elif roll < 0.67:
            pool.append(Garbage("wrong_type", wrong_types[index % len(wrong_types)]))
        elif roll < 0.77:
            pool.append(Garbage("huge_length", huge[index % len(huge)]))
        elif roll < 0.79:
            pool.append(Garbage("deep", deep[index % len(deep)]))
        elif roll < 0.995:
            pool.append(Garbage("bad_topic", bad_topics[index % len(bad_topics)], level="core"))
        else:
            size = rng.randrange(MAX_FRAME_BYTES + 1, 3 * MAX_FRAME_BYTES)
            pool.append(Garbage("oversized", rng.randbytes(size)))
    return pool


# ---------------------------------------------------------------------------- NATS


def _hpub(subject: bytes, head: bytes, body: bytes) -> bytes:
    return b"HPUB %b %d %d\r\n%b%b\r\n" % (subject, len(head), len(head) + len(body), head, body)


def _pub(subject: bytes, body: bytes) -> bytes:
    return b"PUB %b %d\r\n%b\r\n" % (subject, len(body), body)


def _head(*lines: bytes) -> bytes:
    return b"NATS/1.0\r\n" + b"".join(line + b"\r\n" for line in lines) + b"\r\n"


def nats_garbage(seed: int = 8, count: int = 2000) -> list[Garbage]:
    """A shuffled pool of bad NATS messages (whole ``PUB``/``HPUB`` commands) for a receiver
    listening on ``spray.>`` with a responder for ``spray.svc``."""
    rng = random.Random(seed)
    subject = GARBAGE_TOPIC.encode()
    request = b"<?.spray.svc"
    json_type = b"Content-Type: application/json"
    msgpack_type = b"Content-Type: application/msgpack"
    sender = b"Nanomitter-Sender: " + GARBAGE_SENDER.encode()
    fixed = [
        ("declared_empty", _hpub(subject, _head(json_type), b"")),
        ("unknown_type", _hpub(subject, _head(b"Content-Type: text/csv"), b"1,2")),
        ("bad_seq", _hpub(subject, _head(b"Nanomitter-Seq: seven"), b"1")),
        ("bad_seq", _hpub(subject, _head(b"Nanomitter-Seq: -1", json_type), b"1")),
        ("bad_seq", _hpub(subject, _head(b"Nanomitter-Seq: 1e3", sender), b"1")),
        ("bad_seq", _hpub(subject, _head(sender, "Nanomitter-Seq: ²".encode()), b"1")),
        ("bad_seq", _hpub(subject, _head(b"Nanomitter-Seq: " + b"9" * 5000), b"1")),
        ("bad_seq", _hpub(subject, _head(b"Nanomitter-Seq: " + b"9" * 5000, json_type), b"1")),
        ("status", _hpub(subject, b"NATS/1.0 503\r\n\r\n", b"")),
        ("status", _hpub(subject, b"NATS/1.0 408 Request Timeout\r\n\r\n", b"")),
        ("bad_head", _hpub(subject, b"garbage\r\n\r\n", b"1")),
        ("bad_head", _hpub(subject, _head(b"no colon", b"\xff\xfe: \x00"), b"\xff")),
        ("deep", _hpub(subject, _head(json_type), b"[" * DEEP + b"]" * DEEP)),
        ("deep", _hpub(subject, _head(msgpack_type), b"\x91" * DEEP + b"\xc0")),
        ("huge_length", _hpub(subject, _head(msgpack_type), b"\xdb\xff\xff\xff\xffabc")),
        ("huge_length", _hpub(subject, _head(msgpack_type), b"\xdd\xff\xff\xff\xff\x01")),
        ("bad_request", _hpub(request, _head(json_type, sender), b"5")),
        ("bad_request", _hpub(request, _head(json_type, sender), b'{"to": ""}')),
        ("bad_request", _hpub(request, _head(json_type, sender), b'{"id": "x"}')),
    ]
    pool: list[Garbage] = []
    for index in range(count):
        roll = rng.random()
        body = b"\xff" + rng.randbytes(rng.randrange(1, 48))  # never JSON, never empty
        if roll < 0.25:
            pool.append(Garbage("random", _pub(subject, body)))
        elif roll < 0.45:
            pool.append(Garbage("random", _hpub(subject, _head(json_type, sender), body)))
        elif roll < 0.55:
            bad = b"\xc1" + body  # a never-used msgpack byte first
            pool.append(Garbage("random", _hpub(subject, _head(msgpack_type), bad)))
        elif roll < 0.65:
            text = json.dumps({"n": rng.randrange(1 << 30), "t": "x" * 20}).encode()
            cut = text[: rng.randrange(1, len(text))]
            pool.append(Garbage("truncated", _hpub(subject, _head(json_type), cut)))
        else:
            kind, command = fixed[index % len(fixed)]
            level = "core" if kind == "bad_request" else "decoder"
            pool.append(Garbage(kind, command, level=level))
    return pool


# ---------------------------------------------------------------------------- child processes


def _wait_for(line: str) -> None:
    while True:
        got = sys.stdin.readline()
        if not got:
            raise SystemExit(f"stdin closed before {line!r}")
        if got.strip() == line:
            return


def _report(result: dict[str, Any]) -> None:
    print(json.dumps(result), flush=True)


def _kinds(pool: list[Garbage], sent: int) -> dict[str, int]:
    kinds: dict[str, int] = {}
    full, rest = divmod(sent, len(pool))
    for index, garbage in enumerate(pool):
        kinds[garbage.kind] = kinds.get(garbage.kind, 0) + full + (1 if index < rest else 0)
    return kinds


def spray_nng(url: str, seconds: float) -> None:
    import pynng

    pool = msgpack_garbage()
    frames = [garbage.frame for garbage in pool]
    with pynng.Bus0(send_buffer_size=1024, recv_buffer_size=16) as sock:
        sock.dial(url, block=True)
        print("ready", flush=True)
        _wait_for("go")
        sent = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for frame in frames:
                sock.send(frame)  # bus0 never blocks: past a full queue it drops
            sent += len(frames)
    _report({"sent": sent, "kinds": _kinds(pool, sent)})


def spray_zmq(url: str, seconds: float) -> None:
    import zmq

    host, _, port = url.removeprefix("zmq+tcp://").partition("?")[0].rpartition(":")
    pool = msgpack_garbage()
    context = zmq.Context()
    sock = context.socket(zmq.PUB)
    sock.setsockopt(zmq.SNDHWM, 10_000)
    sock.setsockopt(zmq.LINGER, 0)
    monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
    sock.connect(f"tcp://{host}:{port}")
    if not monitor.poll(20_000):
        raise SystemExit("the proxy did not accept the connection")
    print("ready", flush=True)
    _wait_for("go")
    topic = GARBAGE_TOPIC.encode()
    messages: list[tuple[str, list[bytes]]] = []
    for index, garbage in enumerate(pool):
        shape = index % 20
        if shape == 0:  # one frame only (and it starts with a topic the receiver matches)
            messages.append(("one_frame", [topic + b"." + garbage.frame]))
        elif shape == 1:  # three frames
            messages.append(("three_frames", [topic, garbage.frame, garbage.frame]))
        else:
            messages.append((garbage.kind, [topic, garbage.frame]))
    sent = 0
    kinds: dict[str, int] = {}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for kind, parts in messages:
            sock.send_multipart(parts)  # PUB never blocks: past its HWM it drops
            kinds[kind] = kinds.get(kind, 0) + 1
        sent += len(messages)
    monitor.close()
    sock.close()
    context.term()
    _report({"sent": sent, "kinds": kinds})


def spray_nats(url: str, seconds: float) -> None:
    host, _, port = url.removeprefix("nats://").partition("?")[0].rpartition(":")
    pool = nats_garbage()
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        reader = sock.makefile("rb")
        if not reader.readline().startswith(b"INFO "):
            raise SystemExit("not a NATS server")
        connect = {"verbose": False, "pedantic": False, "headers": True, "name": "sprayer"}
        sock.sendall(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
        if reader.readline() != b"PONG\r\n":
            raise SystemExit("the NATS server refused the sprayer")
        print("ready", flush=True)
        _wait_for("go")
        chunks = [
            b"".join(g.frame for g in pool[start : start + 100])
            for start in range(0, len(pool), 100)
        ]
        sent = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for chunk in chunks:
                sock.sendall(chunk)
            sent += len(pool)
        sock.sendall(b"PING\r\n")  # the PONG: the server has processed every message
        while (line := reader.readline()) != b"PONG\r\n":
            if not line or line.startswith(b"-ERR"):
                raise SystemExit(f"the NATS server cut the sprayer off: {line!r}")
    kinds: dict[str, int] = {}
    levels = {"decoder": 0, "core": 0}
    full = sent // len(pool)
    for garbage in pool:
        kinds[garbage.kind] = kinds.get(garbage.kind, 0) + full
        levels[garbage.level] += full
    _report({"sent": sent, "kinds": kinds, "levels": levels})


async def run_valid(url: str) -> None:
    import anyio
    import anyio.to_thread

    import nanomitter

    async with nanomitter.connect(url, heartbeat_interval=0) as bus:
        print("ready", flush=True)
        await anyio.to_thread.run_sync(_wait_for, "go")
        finish = anyio.Event()

        async def wait_finish() -> None:
            await anyio.to_thread.run_sync(_wait_for, "finish")
            finish.set()

        emitted = 0
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_finish)
            while not finish.is_set():
                for _ in range(VALID_RATE // 100):
                    emitted += 1
                    await bus.emit(VALID_TOPIC, {"n": emitted})
                await anyio.sleep(0.01)
        emitted += 1
        await bus.emit(VALID_TOPIC, {"n": emitted, "last": True})
        stats = bus.stats()
    _report({"emitted": emitted, "sender": bus.id, "stats": msgspec.structs.asdict(stats)})


def main(argv: list[str]) -> None:
    mode, url = argv[1], argv[2]
    if mode == "valid":
        import anyio

        anyio.run(run_valid, url)
        return
    seconds = float(argv[3])
    {"nng": spray_nng, "zmq": spray_zmq, "nats": spray_nats}[mode](url, seconds)


if __name__ == "__main__":
    main(sys.argv)
