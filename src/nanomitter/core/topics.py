"""Topics, patterns and the matcher that maps a topic to the patterns it satisfies.

A topic is one or more dot-separated tokens. In a pattern a token may be ``*`` (exactly one
token) or, last, ``>`` (one or more trailing tokens, as in NATS); a bare ``*`` matches every
topic (the seed's wildcard). Matching walks a trie, so its cost depends on the topic's length,
not on how many patterns are registered; results are cached per topic until patterns change.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

ANY = "*"
"""The bare pattern that matches every topic."""

ONE_TOKEN = "*"
TAIL = ">"
MAX_TOPIC_LENGTH = 1024
RESERVED_PREFIX = "$"
"""Topics starting with this are transport control traffic, never user events."""
REQUEST_PREFIXES = ("<?", "<!")
"""Topics starting with these carry request/reply traffic (see :mod:`.requests`)."""
_FORBIDDEN = frozenset(" \t\r\n\x00")

T = TypeVar("T")


def _bad(what: str, value: object, why: str) -> ValueError:
    return ValueError(f"invalid {what} {value!r}: {why}")


def validate_topic(topic: object) -> str:
    """Return ``topic`` if it can be emitted, else raise ``ValueError`` saying why."""
    if not isinstance(topic, str):
        raise TypeError(f"topic must be a str, got {type(topic).__name__}: {topic!r}")
    _check_common("topic", topic)
    if "*" in topic or ">" in topic:
        if any(token in (ONE_TOKEN, TAIL) for token in topic.split(".")):
            raise _bad(
                "topic",
                topic,
                "wildcards ('*', '>') are for listener patterns, not emit; "
                "emit to a concrete topic such as 'stock.AAPL.price'",
            )
        raise _bad("topic", topic, "'*' and '>' may not appear inside a token")
    return topic


def validate_pattern(pattern: object) -> str:
    """Return ``pattern`` if listeners may use it, else raise ``ValueError`` saying why."""
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be a str, got {type(pattern).__name__}: {pattern!r}")
    if pattern == ANY:
        return pattern
    _check_common("pattern", pattern)
    tokens = pattern.split(".")
    for index, token in enumerate(tokens):
        if token in (ONE_TOKEN, TAIL):
            if token == TAIL and index != len(tokens) - 1:
                raise _bad("pattern", pattern, "'>' may only be the last token")
        elif "*" in token or ">" in token:
            raise _bad(
                "pattern",
                pattern,
                f"token {token!r} mixes a wildcard with text; '*' and '>' must be whole tokens",
            )
    return pattern


def _check_common(what: str, value: str) -> None:
    if not value:
        raise _bad(what, value, "it is empty")
    if len(value) > MAX_TOPIC_LENGTH:
        raise _bad(what, value[:40] + "...", f"longer than {MAX_TOPIC_LENGTH} characters")
    if _FORBIDDEN.intersection(value):
        raise _bad(what, value, "whitespace and NUL are not allowed")
    if "" in value.split("."):
        raise _bad(what, value, "empty token (leading, trailing or doubled '.')")
    if value[0] == RESERVED_PREFIX:
        raise _bad(what, value, "topics starting with '$' are reserved for transport control")
    if value.startswith(REQUEST_PREFIXES):
        raise _bad(
            what,
            value,
            "topics starting with '<?' or '<!' carry request/reply traffic; "
            "use bus.request(), bus.survey() and bus.responder() instead",
        )


class _Node(Generic[T]):
    __slots__ = ("children", "one", "tail", "values")

    def __init__(self) -> None:
        self.children: dict[str, _Node[T]] = {}
        self.one: _Node[T] | None = None
        self.tail: list[T] = []
        self.values: list[T] = []


class PatternTrie(Generic[T]):
    """Patterns mapped to values; ``match(topic)`` yields the values of every matching pattern.

    Values are yielded in no particular order; callers that need an order sort them.
    """

    def __init__(self) -> None:
        self._root: _Node[T] = _Node()
        self._everything: list[T] = []

    def add(self, pattern: str, value: T) -> None:
        if pattern == ANY:
            self._everything.append(value)
            return
        node = self._root
        tokens = pattern.split(".")
        for token in tokens[:-1]:
            node = self._step(node, token)
        last = tokens[-1]
        if last == TAIL:
            node.tail.append(value)
        else:
            self._step(node, last).values.append(value)

    def remove(self, pattern: str, value: T) -> None:
        """Remove one registration of ``value`` under ``pattern`` (no error if absent)."""
        if pattern == ANY:
            _discard(self._everything, value)
            return
        node: _Node[T] | None = self._root
        tokens = pattern.split(".")
        for token in tokens[:-1]:
            node = _follow(node, token)
        if node is None:
            return
        last = tokens[-1]
        if last == TAIL:
            _discard(node.tail, value)
        else:
            target = _follow(node, last)
            if target is not None:
                _discard(target.values, value)

    def match(self, topic: str) -> Iterator[T]:
        yield from self._everything
        yield from _match(self._root, topic.split("."), 0)

    @staticmethod
    def _step(node: _Node[T], token: str) -> _Node[T]:
        if token == ONE_TOKEN:
            if node.one is None:
                node.one = _Node()
            return node.one
        child = node.children.get(token)
        if child is None:
            child = node.children[token] = _Node()
        return child


def _follow(node: _Node[T] | None, token: str) -> _Node[T] | None:
    if node is None:
        return None
    if token == ONE_TOKEN:
        return node.one
    return node.children.get(token)


def _discard(values: list[T], value: T) -> None:
    for index, existing in enumerate(values):
        if existing is value:
            del values[index]
            return


def _match(node: _Node[T], tokens: list[str], index: int) -> Iterator[T]:
    if index == len(tokens):
        yield from node.values
        return
    # '>' here matches the remaining one-or-more tokens
    yield from node.tail
    child = node.children.get(tokens[index])
    if child is not None:
        yield from _match(child, tokens, index + 1)
    if node.one is not None:
        yield from _match(node.one, tokens, index + 1)


def pattern_matches(pattern: str, topic: str) -> bool:
    """Reference matcher for one pattern (used by tests and filters, not the hot path)."""
    if pattern == ANY:
        return True
    want = pattern.split(".")
    have = topic.split(".")
    for index, token in enumerate(want):
        if token == TAIL:
            return len(have) > index
        if index >= len(have) or (token != ONE_TOKEN and token != have[index]):
            return False
    return len(have) == len(want)


def literal_prefix(pattern: str) -> str:
    """The literal text before the first wildcard: what prefix-filtering transports subscribe to."""
    if pattern == ANY:
        return ""
    literal: list[str] = []
    for token in pattern.split("."):
        if token in (ONE_TOKEN, TAIL):
            return ".".join(literal) + "." if literal else ""
        literal.append(token)
    return pattern
