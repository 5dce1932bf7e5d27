"""Shared settings of the reliability tests (issue 8).

Tests marked ``soak`` are the long runs (``make soak``; CI runs them with DURATION=60); the
rest of this directory runs in ``make test`` with short, fixed durations.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/: peers, nats_support


def soak_seconds() -> float:
    """``make soak DURATION=N`` -> N (default 60)."""
    return float(os.environ.get("NANOMITTER_SOAK_SECONDS", "60"))


@pytest.fixture
def soak_duration() -> float:
    return soak_seconds()
