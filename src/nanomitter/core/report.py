"""The default error hook: log problems, without flooding the log under a garbage storm."""

from __future__ import annotations

import logging
import time

from .errors import ListenerError, Problem

logger = logging.getLogger("nanomitter")


class LogProblems:
    """Log each kind of problem at most once per ``interval`` seconds, then a summary.

    Listener errors are logged with their traceback; every problem is counted in ``stats()``
    whether it is logged or not.
    """

    def __init__(self, interval: float = 1.0, log: logging.Logger = logger) -> None:
        self.interval = interval
        self._log = log
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def __call__(self, problem: Problem) -> None:
        now = time.monotonic()
        kind = problem.kind
        if now - self._last.get(kind, -1e9) < self.interval:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        self._last[kind] = now
        suppressed = self._suppressed.pop(kind, 0)
        suffix = f" ({suppressed} more {kind} problems since the last report)" if suppressed else ""
        if isinstance(problem, ListenerError):
            self._log.error(
                "%s%s",
                problem,
                suffix,
                exc_info=(
                    type(problem.exception),
                    problem.exception,
                    problem.exception.__traceback__,
                ),
            )
        else:
            self._log.warning("%s%s", problem, suffix)
