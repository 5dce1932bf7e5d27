"""URL parsing, option checking, redaction and the scheme registry."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import nanomitter
from nanomitter.transports import BusURL, register, transport_class, unregister
from nanomitter.transports.memory import MemoryTransport
from nanomitter.transports.url import redact


def test_unknown_scheme_lists_known_ones() -> None:
    with pytest.raises(nanomitter.UnknownSchemeError) as info:
        nanomitter.connect("carrierpigeon://coop")
    message = str(info.value)
    assert "'carrierpigeon'" in message and "memory://" in message
    assert isinstance(info.value, ValueError)


def test_unknown_option_lists_known_ones() -> None:
    with pytest.raises(nanomitter.UnknownOptionError) as info:
        nanomitter.connect("memory://x?codex=json")
    message = str(info.value)
    assert "'codex'" in message and "codec" in message and "capacity" in message


def test_keyword_options_are_checked_like_query_options() -> None:
    with pytest.raises(nanomitter.UnknownOptionError, match="'hwm'"):
        nanomitter.connect("memory://x", hwm=10)


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("memory://x?codec=pickle", "codec='pickle' is not one of"),
        ("memory://x?capacity=lots", "must be an integer"),
        ("memory://x?capacity=0", "must be >= 1"),
        ("memory://x?codec=json&codec=msgpack", "given twice"),
        ("memory://", "needs a bus name"),
        ("no-scheme-here", "has no scheme"),
    ],
)
def test_bad_option_values_are_clear(url: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(")):
        nanomitter.connect(url)


def test_no_url_uses_environment_then_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NANOMITTER_URL", "memory://from-env")
    bus = nanomitter.connect()
    assert bus.transport.address == "memory://from-env"
    monkeypatch.delenv("NANOMITTER_URL")
    assert nanomitter.default_url() == "tcp://127.0.0.1:55555"


@pytest.mark.parametrize(
    ("url", "shown", "hidden"),
    [
        ("nats://alice:s3cret@127.0.0.1:4222", "alice:***@127.0.0.1:4222", "s3cret"),
        ("nats://tok3n@127.0.0.1:4222", "***@127.0.0.1:4222", "tok3n"),
        ("nats://h:1?token=abc&codec=json", "token=***&codec=json", "abc"),
        ("zmq+tcp://h:1?curve_secret_key=KEY", "curve_secret_key=***", "KEY"),
        # a comma in a password splits it into two "servers": neither part may show
        ("nats://alice:s3c,ret@127.0.0.1:4222", "***,***@127.0.0.1:4222", "s3c"),
        ("nats://alice:s3c,ret@127.0.0.1:4222", "***,***@127.0.0.1:4222", "ret"),
    ],
)
def test_credentials_never_shown(url: str, shown: str, hidden: str) -> None:
    assert shown in redact(url)
    assert hidden not in redact(url)
    parsed = BusURL.parse(url)
    assert hidden not in str(parsed) and hidden not in repr(parsed)


def test_unknown_scheme_error_does_not_leak_credentials() -> None:
    with pytest.raises(ValueError, match="unknown") as info:
        nanomitter.connect("nope://user:hunter2@host")
    assert "hunter2" not in str(info.value)


class CustomMemory(MemoryTransport):
    schemes = ("custom",)


@pytest.fixture
def custom_scheme() -> Iterator[str]:
    register("custom", CustomMemory)
    yield "custom"
    unregister("custom")


def test_registered_transport_is_used_and_listed(custom_scheme: str) -> None:
    assert transport_class(custom_scheme) is CustomMemory
    assert isinstance(nanomitter.connect("custom://x").transport, CustomMemory)
    with pytest.raises(nanomitter.UnknownSchemeError, match="custom://"):
        nanomitter.connect("other://x")


def test_registration_by_dotted_name() -> None:
    register("lazy", "nanomitter.transports.memory:MemoryTransport")
    try:
        assert transport_class("lazy") is MemoryTransport
    finally:
        unregister("lazy")


def test_entry_point_plugins_are_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A third-party package's `nanomitter.transports` entry point adds its scheme."""
    from importlib.metadata import EntryPoint

    from nanomitter.transports import registry

    plugin = EntryPoint(
        name="plug",
        value="nanomitter.transports.memory:MemoryTransport",
        group=registry.ENTRY_POINT_GROUP,
    )
    monkeypatch.setattr(registry, "_plugins_loaded", [])
    monkeypatch.setattr(registry, "_registered", {})
    monkeypatch.setattr(
        registry,
        "entry_points",
        lambda group: [plugin] if group == registry.ENTRY_POINT_GROUP else [],
    )
    assert "plug" in registry.known_schemes()
    assert transport_class("plug") is MemoryTransport
