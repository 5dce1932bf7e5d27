"""One async function per promise in DESIGN.md's "Semantics every transport must keep".

Each check takes ``make_url`` (a callable returning a fresh bus URL), calls it once, opens at
least three emitters on that URL with ``nanomitter.connect``, and raises ``AssertionError``
saying which promise broke and how, or :class:`CheckSkipped` when the transport lacks what
the check needs. One module per promise (delivery, errors, loss, lifecycle, topics, presence,
requests); everything is re-exported here.
"""

from __future__ import annotations

from .common import Quote, RestartHub
from .connects import CLOSE_BOUND, CONNECT_DEADLINE, check_connects
from .delivery import (
    check_across_processes,
    check_exactly_once,
    check_order_under_load,
    check_registration_order,
)
from .errors import (
    Boom,
    check_garbage_frames,
    check_listener_errors_isolated,
    check_typed_validation,
)
from .lifecycle import check_close_flushes, check_no_leaked_tasks, check_reconnects
from .loss import check_bounded_queues, check_loss_is_counted
from .payloads import check_payload_sizes
from .presence import check_presence
from .requests import Refused, check_request_reply, check_requests_across_processes, check_survey
from .topics import BAD_PATTERNS, BAD_TOPICS, GOOD_PATTERNS, check_invalid_topics

__all__ = [
    "BAD_PATTERNS",
    "BAD_TOPICS",
    "CLOSE_BOUND",
    "CONNECT_DEADLINE",
    "GOOD_PATTERNS",
    "Boom",
    "Quote",
    "Refused",
    "RestartHub",
    "check_across_processes",
    "check_bounded_queues",
    "check_close_flushes",
    "check_connects",
    "check_exactly_once",
    "check_garbage_frames",
    "check_invalid_topics",
    "check_listener_errors_isolated",
    "check_loss_is_counted",
    "check_no_leaked_tasks",
    "check_order_under_load",
    "check_payload_sizes",
    "check_presence",
    "check_reconnects",
    "check_registration_order",
    "check_request_reply",
    "check_requests_across_processes",
    "check_survey",
    "check_typed_validation",
]
