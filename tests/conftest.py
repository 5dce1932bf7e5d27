"""Shared test setup: every async test runs on asyncio and on trio; soak settings."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def soak_seconds() -> float:
    """``make soak DURATION=N`` -> N seconds (default 60): how long the soak-marked tests
    in tests/reliability run (``make test`` does not run them)."""
    return float(os.environ.get("NANOMITTER_SOAK_SECONDS", "60"))


@pytest.fixture
def soak_duration() -> float:
    return soak_seconds()
