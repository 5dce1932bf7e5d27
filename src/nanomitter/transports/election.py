"""``role=auto`` hub election, shared by the nng and ZeroMQ transports.

A member that has gone without a hub for ``election_ms`` x (1 + a random jitter) tries to
become the hub itself; the jitter lets one of several survivors win, the others find its
address taken and stay members. What "without a hub" means is the transport's business
(nng: no pipe; ZeroMQ: the hub's address is free), and so is taking over.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

from ..core.errors import NanomitterError

logger = logging.getLogger("nanomitter.election")


class Election:
    """The clock of one member's election, and how many it won."""

    def __init__(self, election_ms: int) -> None:
        self.election_ms = election_ms
        self.won = 0
        self._jitter = random.random()
        self._hubless_since: float | None = None

    @property
    def patience(self) -> float:
        """Seconds to wait for traffic before looking for the hub again."""
        return 0.05 + self.election_ms / 4000

    def hub_seen(self) -> None:
        """Traffic arrived: a hub forwards to us, the clock starts again."""
        self._hubless_since = None

    def check(self, hub_missing: bool, take_over: Callable[[], bool], address: str) -> None:
        """Call ``take_over()`` once the hub has been missing long enough; it returns
        whether we became the hub, or raises :class:`NanomitterError` (we cannot: e.g. the
        address is not on this host, so we stay a member and keep dialling)."""
        if not hub_missing:
            self._hubless_since = None
            return
        now = time.monotonic()
        if self._hubless_since is None:
            self._hubless_since = now
            return
        if now - self._hubless_since < self.election_ms / 1000 * (1 + self._jitter):
            return
        self._hubless_since = None
        try:
            won = take_over()
        except NanomitterError as exc:
            logger.debug("could not take over the hub at %s: %s", address, exc)
            return
        if won:
            self.won += 1
            logger.info("took over as the hub of %s", address)
