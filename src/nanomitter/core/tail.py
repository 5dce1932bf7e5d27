"""Loss at the tail: the last numbers a sender used, told in its heartbeats and its bye.

Receivers count a gap when a later event shows up (rule 6), so events lost after the last
one a receiver gets leave no trace by themselves. Each ``<3`` heartbeat (and the bye an
emitter sends when it closes) therefore carries ``"seqs": {topic: last seq}`` for the topics
whose number moved since the previous one; a receiver that tracks that sender on that topic
and saw less counts the difference in ``lost``. Heartbeats travel the same path as the
events, after them, so a beacon never overtakes what it accounts for.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import islice
from typing import Any

MAX_BEACON_TOPICS = 1024
"""The most topics one heartbeat carries (the rest go in the next one)."""


class TailBeacon:
    """The sender's side: which of its per-topic numbers the bus has not been told yet."""

    def __init__(self, own_seqs: dict[str, int], limit: int) -> None:
        self._own = own_seqs  # the emitter's live counters (read, never written here)
        self._told: dict[str, int] = {}
        self._limit = limit

    def untold(self) -> dict[str, int]:
        """Up to :data:`MAX_BEACON_TOPICS` topics whose number moved since it was last told."""
        told = self._told
        fresh: dict[str, int] = {}
        for topic, seq in self._own.items():
            if topic[:1] != "<" and told.get(topic) != seq:
                fresh[topic] = seq
                if len(fresh) >= MAX_BEACON_TOPICS:
                    break
        return fresh

    def told(self, seqs: dict[str, int]) -> None:
        """``seqs`` went out in a heartbeat."""
        told = self._told
        for topic, seq in seqs.items():
            told.pop(topic, None)  # re-insert: the oldest entry is the one to forget
            told[topic] = seq
        while len(told) > self._limit:
            del told[next(iter(told))]


def revealed_tail(last_seen: dict[str, int] | None, data: Any, hears: Callable[[str], bool]) -> int:
    """Events a heartbeat's ``seqs`` shows this receiver missed (its tracking is advanced).

    Only topics already tracked for that sender count (a receiver that never got one of its
    events on a topic cannot tell a loss from not listening), and only those ``hears(topic)``
    still accepts: a node that stopped listening on a topic does not miss its events.
    """
    if not last_seen or not isinstance(data, dict):
        return 0
    seqs = data.get("seqs")
    if not isinstance(seqs, dict):
        return 0
    missed = 0
    for topic, seq in islice(seqs.items(), MAX_BEACON_TOPICS):
        last = last_seen.get(topic) if isinstance(topic, str) else None
        if last is None or type(seq) is not int or seq <= last or not hears(topic):
            continue
        missed += seq - last
        last_seen[topic] = seq
    return missed
