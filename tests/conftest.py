"""Shared test setup: every async test runs on asyncio and on trio."""

from __future__ import annotations

import pytest

from peer_policy import REQUIRE_PEERS, skip_or_fail

__all__ = ["REQUIRE_PEERS", "skip_or_fail"]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)

