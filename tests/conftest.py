"""Shared test setup: every async test runs on asyncio and on trio."""

from __future__ import annotations

import os

import pytest

REQUIRE_PEERS = os.environ.get("NANOMITTER_REQUIRE_PEERS") == "1"


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def skip_or_fail(reason: str) -> None:
    """Skip a test whose external peer is missing, or fail when CI requires peers."""
    if REQUIRE_PEERS:
        pytest.fail(f"{reason} (NANOMITTER_REQUIRE_PEERS=1 turns this skip into a failure)")
    pytest.skip(reason)
