"""The conformance suite: one set of checks that proves a transport keeps the bus promises.

Like ``trio.testing.check_one_way_stream``, you hand it a factory, ``make_url() -> str``,
which returns a fresh bus URL on each call; every check opens at least three emitters on
its URL with ``nanomitter.connect`` and checks one rule of DESIGN.md ("Semantics every
transport must keep"). A broken promise raises ``AssertionError`` saying what broke and how
("event 'once.t' #17 from node A to listener '*' on node B was delivered twice");
a check the transport cannot support raises :class:`CheckSkipped`.

A third-party transport runs the whole suite with a few lines of pytest::

    import uuid
    import pytest
    from nanomitter import conformance

    def make_url() -> str:
        return f"mybus://127.0.0.1/{uuid.uuid4().hex}"

    @pytest.fixture(params=["asyncio", "trio"])
    def anyio_backend(request):
        return request.param

    @pytest.mark.anyio
    @conformance.parametrize()                # one test per check, named after it
    async def test_conformance(check: conformance.Check, anyio_backend: str) -> None:
        await conformance.run_check(check, make_url)   # CheckSkipped -> pytest.skip

or, outside pytest, ``results = await conformance.run_all(make_url)`` (raises
``AssertionError`` listing every failed check). Each check is also a plain async function,
e.g. ``await conformance.check_exactly_once(make_url)``. Rule 8 needs a hook that restarts
your hub: ``run_check(check, make_url, restart_hub=restart)``. Lower the wait for
expected failures with ``with conformance.deadline(2): ...``. For transports that cross
processes, :mod:`nanomitter.conformance.processes` runs emitters in child processes.
See docs/conformance.md.
"""

from .checks import (
    BAD_PATTERNS,
    BAD_TOPICS,
    GOOD_PATTERNS,
    Quote,
    Refused,
    RestartHub,
    check_across_processes,
    check_bounded_queues,
    check_close_flushes,
    check_connects,
    check_exactly_once,
    check_garbage_frames,
    check_invalid_topics,
    check_listener_errors_isolated,
    check_loss_is_counted,
    check_no_leaked_tasks,
    check_order_under_load,
    check_payload_sizes,
    check_presence,
    check_reconnects,
    check_registration_order,
    check_request_reply,
    check_requests_across_processes,
    check_survey,
    check_typed_validation,
)
from .harness import (
    DEFAULT_DEADLINE,
    CheckSkipped,
    MakeURL,
    capabilities_of,
    current_deadline,
    deadline,
)
from .suite import CHECKS, FIRST, Check, CheckResult, get_check, parametrize, run_all, run_check

__all__ = [
    "BAD_PATTERNS",
    "BAD_TOPICS",
    "CHECKS",
    "DEFAULT_DEADLINE",
    "FIRST",
    "GOOD_PATTERNS",
    "Check",
    "CheckResult",
    "CheckSkipped",
    "MakeURL",
    "Quote",
    "Refused",
    "RestartHub",
    "capabilities_of",
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
    "current_deadline",
    "deadline",
    "get_check",
    "parametrize",
    "run_all",
    "run_check",
]
