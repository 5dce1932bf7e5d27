"""Keep the suite's own provocations off the user's terminal; leave everything else loud.

Some checks make the emitter log on purpose (a node whose error hook raises falls back to
logging every problem, with its traceback). A third party running ``run_all`` should not see
those tracebacks: the check holds what the ``nanomitter`` logger emits, takes the records it
caused (and asserts on them), and lets every other record through when it ends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ..core.report import logger as nanomitter_logger


class HeldLogs(logging.Handler):
    """The records the ``nanomitter`` logger emitted while held, until claimed or released."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def claim(self, expected: Callable[[logging.LogRecord], bool]) -> list[logging.LogRecord]:
        """Remove and return the records ``expected`` recognises as the check's own doing."""
        mine = [record for record in self.records if expected(record)]
        self.records = [record for record in self.records if not expected(record)]
        return mine


@contextmanager
def held_logs(logger: logging.Logger = nanomitter_logger) -> Iterator[HeldLogs]:
    """Hold ``logger``'s records (its children's too) for the block: its handlers and its
    parents' see nothing until the block ends, then only the records nobody claimed."""
    held = HeldLogs()
    handlers, propagate = logger.handlers[:], logger.propagate
    logger.handlers = [held]
    logger.propagate = False
    try:
        yield held
    finally:
        logger.handlers = handlers
        logger.propagate = propagate
        for record in held.records:
            logger.handle(record)


__all__ = ["HeldLogs", "held_logs"]
