"""Codecs: the original nanomitter's wire bytes, batches, and bad frames."""

from __future__ import annotations

import msgspec
import pytest

from nanomitter.core.codecs import (
    FrameDecoder,
    JsonCodec,
    MsgpackCodec,
    UnserializableDataError,
    get_codec,
)
from nanomitter.core.errors import FrameDecodeError, Problem
from nanomitter.core.event import DistributedEvent
from nanomitter.core.stats import Counters
from wire_vectors import NAMES, VECTORS, vector_expected, vector_frame


def load_vector(name: str) -> tuple[bytes, dict[str, object]]:
    return vector_frame(name), vector_expected(name)


def test_vectors_are_present_in_the_repository() -> None:
    """The vectors live in the repository: a fresh clone has nothing beside it to read."""
    assert sorted(p.stem for p in VECTORS.glob("*.hex")) == sorted(NAMES)
    for name in NAMES:
        assert (VECTORS / f"{name}.json").is_file(), f"tests/vectors/{name}.json is missing"


@pytest.mark.parametrize("name", NAMES)
def test_original_frames_decode_exactly(name: str) -> None:
    frame, expected = load_vector(name)
    event = MsgpackCodec().decode(frame)
    assert isinstance(event, DistributedEvent)
    assert event.topic == expected["topic"]
    assert event.data == expected["data"]
    assert event.from_leader == expected["fromLeader"]
    assert event.sender == expected["sender"]
    assert event.seq == 0  # the original does not number its events


@pytest.mark.parametrize("name", NAMES)
def test_our_frames_are_the_original_map_plus_seq(name: str) -> None:
    """Same keys in the same order, our `seq` appended: the original reads topic and data."""
    frame, expected = load_vector(name)
    event = DistributedEvent(
        topic=str(expected["topic"]),
        data=expected["data"],
        from_leader=bool(expected["fromLeader"]),
        sender=str(expected["sender"]),
        seq=7,
    )
    ours = MsgpackCodec().encode(event)
    assert frame[0] == 0x84 and ours[0] == 0x85  # fixmap of 4 keys vs 5 keys
    assert ours[1 : len(frame)] == frame[1:]
    assert ours[len(frame) :] == b"\xa3seq\x07"
    assert list(msgspec.msgpack.decode(ours)) == ["topic", "data", "fromLeader", "sender", "seq"]


@pytest.mark.parametrize("codec_name", ["msgpack", "json"])
def test_round_trip_and_batches(codec_name: str) -> None:
    codec = get_codec(codec_name)
    events = [DistributedEvent(topic="a.b", data={"n": n}, sender="s", seq=n) for n in (1, 2)]
    assert codec.decode(codec.encode(events[0])) == events[0]
    assert codec.decode(codec.encode_batch(events)) == events


def test_unknown_codec_lists_known() -> None:
    with pytest.raises(ValueError, match="known codecs: json, msgpack"):
        get_codec("pickle")


@pytest.mark.parametrize("codec", [MsgpackCodec(), JsonCodec()])
def test_unserialisable_data_names_topic_and_codec(codec: MsgpackCodec | JsonCodec) -> None:
    with pytest.raises(UnserializableDataError, match=r"cannot emit on 'x\.y'.*" + codec.name):
        codec.encode(DistributedEvent(topic="x.y", data={"when": object()}))
    with pytest.raises(TypeError):  # also a TypeError, for users who catch the built-in
        codec.encode(DistributedEvent(topic="x.y", data=object()))


BAD_FRAMES = [
    b"",
    b"\xc1",  # never-used msgpack byte
    b"garbage bytes \x00\xff",
    MsgpackCodec().encode(DistributedEvent(topic="t", data=1))[:-3],  # truncated
    msgspec.msgpack.encode({"topic": 5, "data": 1}),  # wrong type
    msgspec.msgpack.encode({"data": 1}),  # missing topic
    msgspec.msgpack.encode([1, 2, 3]),  # array of non-events
    msgspec.msgpack.encode("just a string"),
    b"\xdd\xff\xff\xff\xff",  # array declaring 4 billion items
]


@pytest.mark.parametrize("frame", BAD_FRAMES)
def test_bad_frames_are_counted_not_raised(frame: bytes) -> None:
    counters = Counters()
    problems: list[Problem] = []
    decoder = FrameDecoder(MsgpackCodec(), counters, problems.append)
    out: list[DistributedEvent] = []
    decoder.decode_into(frame, out)
    assert out == []
    assert counters.decode_errors == 1
    assert len(problems) == 1 and isinstance(problems[0], FrameDecodeError)
    assert "msgpack" in str(problems[0])


def test_oversized_frames_are_dropped_unread() -> None:
    counters = Counters()
    problems: list[Problem] = []
    decoder = FrameDecoder(MsgpackCodec(), counters, problems.append, max_frame_bytes=100)
    good = MsgpackCodec().encode(DistributedEvent(topic="t", data="x" * 10))
    big = MsgpackCodec().encode(DistributedEvent(topic="t", data="x" * 200))
    out: list[DistributedEvent] = []
    decoder.decode_into(big, out)
    decoder.decode_into(good, out)
    assert [e.data for e in out] == ["x" * 10]
    assert counters.decode_errors == 1
    assert "exceeds the 100-byte limit" in str(problems[0])
