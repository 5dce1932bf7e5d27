"""What a test does when its external peer (a binary, a Debian package) is missing.

A plain module, not conftest.py: pytest swaps ``conftest`` in ``sys.modules`` per directory,
so ``from conftest import ...`` would pick up tests/reliability/conftest.py there.
"""

from __future__ import annotations

import os

import pytest

REQUIRE_PEERS = os.environ.get("NANOMITTER_REQUIRE_PEERS") == "1"


def skip_or_fail(reason: str) -> None:
    """Skip a test whose external peer is missing, or fail when CI requires peers."""
    if REQUIRE_PEERS:
        pytest.fail(f"{reason} (NANOMITTER_REQUIRE_PEERS=1 turns this skip into a failure)")
    pytest.skip(reason)
