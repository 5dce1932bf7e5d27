"""Bus URLs: the scheme picks the transport, query parameters carry its options.

Credentials in a URL are kept for the transport but never shown: ``str()``/``repr()`` of a
:class:`BusURL` and every error message built from it use the redacted form.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from ..core.errors import InvalidOptionError, UnknownOptionError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class BusURL:
    """A parsed bus URL. ``address`` is everything but the scheme and the query."""

    scheme: str
    address: str
    options: Mapping[str, str] = field(default_factory=dict)
    raw: str = field(default="", repr=False)

    @classmethod
    def parse(cls, url: str, extra: Mapping[str, object] | None = None) -> BusURL:
        """Parse ``url``; ``extra`` (keyword options from ``connect``) override the query."""
        if not isinstance(url, str):
            raise TypeError(f"bus URL must be a str, got {type(url).__name__}")
        if "://" not in url:
            raise ValueError(
                f"bus URL {redact(url)!r} has no scheme; write it like "
                "'memory://name', 'tcp://127.0.0.1:55555' or 'nats://127.0.0.1:4222'"
            )
        scheme, rest = url.split("://", 1)
        address, _, query = rest.partition("?")
        options: dict[str, str] = {}
        for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
            if key in options:
                raise InvalidOptionError(f"option {key!r} given twice in {redact(url)!r}")
            options[key] = value
        for key, extra_value in (extra or {}).items():
            options[key] = _option_text(extra_value)
        return cls(scheme=scheme.lower(), address=address, options=options, raw=url)

    def check_options(self, known: Iterable[str]) -> None:
        """Raise :class:`UnknownOptionError` for any option not in ``known``."""
        known = set(known)
        unknown = set(self.options) - known
        if unknown:
            raise UnknownOptionError(self.scheme, unknown, known)

    def get(self, name: str, default: str) -> str:
        return self.options.get(name, default)

    def int_option(
        self, name: str, default: int, *, minimum: int = 0, maximum: int | None = None
    ) -> int:
        text = self.options.get(name)
        if text is None:
            return default
        try:
            value = int(text)
        except ValueError:
            raise InvalidOptionError(
                f"option {name}={text!r} must be an integer (in {self})"
            ) from None
        if value < minimum:
            raise InvalidOptionError(f"option {name}={value} must be >= {minimum} (in {self})")
        if maximum is not None and value > maximum:
            raise InvalidOptionError(f"option {name}={value} must be <= {maximum} (in {self})")
        return value

    def float_option(self, name: str, default: float, *, minimum: float = 0.0) -> float:
        text = self.options.get(name)
        if text is None:
            return default
        try:
            value = float(text)
        except ValueError:
            raise InvalidOptionError(
                f"option {name}={text!r} must be a number (in {self})"
            ) from None
        if value < minimum:
            raise InvalidOptionError(f"option {name}={value} must be >= {minimum} (in {self})")
        return value

    def bool_option(self, name: str, default: bool) -> bool:
        text = self.options.get(name)
        if text is None:
            return default
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise InvalidOptionError(f"option {name}={text!r} must be true or false (in {self})")

    def choice_option(self, name: str, choices: Iterable[str], default: str) -> str:
        text = self.options.get(name, default)
        allowed = list(choices)
        if text not in allowed:
            raise InvalidOptionError(
                f"option {name}={text!r} is not one of {', '.join(allowed)} (in {self})"
            )
        return text

    def __str__(self) -> str:
        return redact(self.raw or f"{self.scheme}://{self.address}")

    def __repr__(self) -> str:
        return f"BusURL({str(self)!r})"


def _option_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def host_and_port(
    scheme: str, address: str, *, highest: int = 65535, why: str = ""
) -> tuple[str, int]:
    """``HOST:PORT`` (anything after a ``/`` ignored) -> (host, port), or a clear error.

    tcp-like buses need an explicit port: without one every ``role=auto`` member would bind
    an ephemeral port of its own and be a hub alone, and nobody would hear anybody.
    """
    host, colon, port_text = address.split("/", 1)[0].rpartition(":")
    if not colon or not host or host.endswith("["):
        raise InvalidOptionError(
            f"{scheme}:// needs HOST:PORT (e.g. {scheme}://127.0.0.1:5560), got {address!r}"
        )
    if not port_text.isdigit() or not 1 <= int(port_text) <= highest:
        raise InvalidOptionError(
            f"{scheme}:// port {port_text!r} must be a number in 1..{highest}{why}"
        )
    return host, int(port_text)


def redact(url: str) -> str:
    """``url`` with any password, token or secret replaced by ``***``.

    Handles server lists (``nats://u:p@h1:4222,nats://u:p@h2:4222``): every comma-separated
    piece has its credentials masked.
    """
    if "://" not in url:  # no scheme (a mistake): mask as if it had one
        return redact("x://" + url)[len("x://") :]
    scheme, rest = url.split("://", 1)
    address, mark, query = rest.partition("?")
    address = address.partition("#")[0]
    pieces = [_redact_piece(piece, "@" in address) for piece in address.split(",")]
    try:
        options = parse_qsl(query, keep_blank_values=True)
    except ValueError:
        return "<unparseable URL>"
    masked = "&".join(
        f"{key}=***" if _is_secret(key) else f"{key}={value}" for key, value in options
    )
    return f"{scheme}://{','.join(pieces)}" + (f"?{masked}" if mark and masked else "")


def _redact_piece(piece: str, credentials: bool) -> str:
    """One server address, ``[scheme://][user[:password]@]host...``, credentials masked
    (``credentials``: the whole address has some, perhaps split by a comma)."""
    prefix = ""
    if "://" in piece:
        prefix, piece = piece.split("://", 1)
        prefix += "://"
    authority, slash, path = piece.partition("/")
    if "@" in authority:
        creds, _, host = authority.rpartition("@")
        user = creds.split(":", 1)[0]
        authority = f"{user}:***@{host}" if ":" in creds else f"***@{host}"
    elif credentials and ":" in authority and not authority.rpartition(":")[2].isdigit():
        authority = "***"  # "user:pa" of "user:pa,ss@host" (a comma in a password)
    return prefix + authority + slash + path


def _is_secret(key: str) -> bool:
    key = key.lower()
    return any(word in key for word in ("pass", "token", "secret", "seed", "nkey"))
