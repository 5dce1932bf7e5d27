"""The original nanomitter's captured wire bytes, kept in ``tests/vectors/`` (see its README).

The names are fixed here, not globbed: a missing file must fail the tests that need it, never
turn into an empty parametrisation that pytest would skip.
"""

from __future__ import annotations

import json
from pathlib import Path

VECTORS = Path(__file__).resolve().parent / "vectors"
NAMES = ("nanomitter-heartbeat", "nanomitter-stockprice")


def vector_frame(name: str) -> bytes:
    """One BUS message body, as the original sent it."""
    return bytes.fromhex((VECTORS / f"{name}.hex").read_text().strip())


def vector_expected(name: str) -> dict[str, object]:
    """The same message decoded (topic, data, fromLeader, sender)."""
    expected = json.loads((VECTORS / f"{name}.json").read_text())
    assert isinstance(expected, dict), f"{name}.json must hold one map"
    return expected
