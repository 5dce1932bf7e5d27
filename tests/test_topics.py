"""Topics, patterns and the trie matcher (checked against a reference matcher)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nanomitter.core.topics import (
    PatternTrie,
    literal_prefix,
    pattern_matches,
    validate_pattern,
    validate_topic,
)


@pytest.mark.parametrize(
    ("topic", "fragment"),
    [
        ("", "empty"),
        ("a..b", "empty token"),
        (".a", "empty token"),
        ("a.", "empty token"),
        ("a.*", "wildcards"),
        ("a.>", "wildcards"),
        ("*", "wildcards"),
        ("a*b", "inside a token"),
        ("a b", "whitespace"),
        ("x" * 2000, "longer than"),
        ("$nanomitter.join", "reserved"),
    ],
)
def test_invalid_topics_say_why(topic: str, fragment: str) -> None:
    with pytest.raises(ValueError, match="invalid topic") as info:
        validate_topic(topic)
    assert fragment in str(info.value)


def test_topic_must_be_a_string() -> None:
    with pytest.raises(TypeError, match="topic must be a str"):
        validate_topic(42)


@pytest.mark.parametrize("topic", ["stockprice", "stock.AAPL.price", "<3", "a-b_c.d:e", "é.ü"])
def test_valid_topics(topic: str) -> None:
    assert validate_topic(topic) == topic


@pytest.mark.parametrize(
    ("pattern", "fragment"),
    [
        ("a.>.b", "last token"),
        ("a*", "whole tokens"),
        ("a.b>", "whole tokens"),
        ("", "empty"),
        ("a..*", "empty token"),
    ],
)
def test_invalid_patterns_say_why(pattern: str, fragment: str) -> None:
    with pytest.raises(ValueError, match="invalid pattern") as info:
        validate_pattern(pattern)
    assert fragment in str(info.value)


@pytest.mark.parametrize("pattern", ["*", ">", "a.*", "*.b", "a.>", "*.*.>", "stockprice"])
def test_valid_patterns(pattern: str) -> None:
    assert validate_pattern(pattern) == pattern


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("*", "a", True),
        ("*", "a.b.c", True),  # bare '*' is the seed's every-event wildcard
        ("a.*", "a.b", True),
        ("a.*", "a", False),
        ("a.*", "a.b.c", False),
        ("a.>", "a.b", True),
        ("a.>", "a.b.c", True),
        ("a.>", "a", False),
        (">", "a", True),
        ("*.b", "a.b", True),
        ("*.b", "a.c", False),
        ("stockprice", "stockprice", True),
        ("stockprice", "stockprices", False),
    ],
)
def test_pattern_table(pattern: str, topic: str, expected: bool) -> None:
    assert pattern_matches(pattern, topic) is expected
    trie: PatternTrie[str] = PatternTrie()
    trie.add(pattern, pattern)
    assert (list(trie.match(topic)) == [pattern]) is expected


tokens = st.sampled_from(["a", "b", "c"])
topics = st.lists(tokens, min_size=1, max_size=4).map(".".join)
pattern_tokens = st.sampled_from(["a", "b", "c", "*"])


@st.composite
def patterns(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 9)) == 0:
        return "*"
    body = draw(st.lists(pattern_tokens, min_size=1, max_size=4))
    if draw(st.booleans()):
        body = [*body[:-1], ">"]
    return ".".join(body)


@settings(max_examples=300, deadline=None)
@given(st.lists(patterns(), min_size=1, max_size=12), topics)
def test_trie_agrees_with_reference(registered: list[str], topic: str) -> None:
    trie: PatternTrie[tuple[int, str]] = PatternTrie()
    entries = list(enumerate(registered))
    for entry in entries:
        trie.add(entry[1], entry)
    expected = sorted(e for e in entries if pattern_matches(e[1], topic))
    assert sorted(trie.match(topic)) == expected
    # removing every other registration leaves exactly the rest
    for entry in entries[::2]:
        trie.remove(entry[1], entry)
    kept = sorted(e for e in entries[1::2] if pattern_matches(e[1], topic))
    assert sorted(trie.match(topic)) == kept


def test_many_unrelated_patterns_do_not_leak_into_matches() -> None:
    """10k patterns under other prefixes: only the topic's own path is matched."""
    trie: PatternTrie[int] = PatternTrie()
    for index in range(10_000):
        trie.add(f"other{index}.*", index)
    trie.add("stock.AAPL", -1)
    assert list(trie.match("stock.AAPL")) == [-1]


@pytest.mark.parametrize(
    ("pattern", "prefix"),
    [("*", ""), ("a.b", "a.b"), ("a.*", "a."), ("a.b.>", "a.b."), ("*.b", "")],
)
def test_literal_prefix(pattern: str, prefix: str) -> None:
    assert literal_prefix(pattern) == prefix
