"""The registry of checks and the ways to run them: one by one, all at once, or from pytest."""

from __future__ import annotations

import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, cast

from . import checks as _checks
from .checks import RestartHub
from .harness import CheckSkipped, MakeURL, describe_failure, leaves_of

if TYPE_CHECKING:
    import pytest


@dataclass(frozen=True)
class Check:
    """One promise of DESIGN.md, checked by ``await check(make_url)``.

    ``str(check)`` is its name, so ``pytest.mark.parametrize(..., ids=str)`` reads well.
    """

    name: str
    rule: int
    """The number of the rule in DESIGN.md's "Semantics every transport must keep" (10:
    request/reply and surveys, see docs/conformance.md)."""
    promise: str
    function: Callable[..., Awaitable[None]]
    needs_restart_hub: bool = False

    async def __call__(self, make_url: MakeURL, *, restart_hub: RestartHub | None = None) -> None:
        """Run the check; a failure is one ``AssertionError``, even from inside task groups."""
        try:
            if self.needs_restart_hub:
                await self.function(make_url, restart_hub=restart_hub)
            else:
                await self.function(make_url)
        except ExceptionGroup as group:
            raise _one_failure(group) from group

    def __str__(self) -> str:
        return self.name


CHECKS: tuple[Check, ...] = (
    Check(
        "connects",
        1,
        "emitters on a fresh URL hear each other within seconds, and idle ones close "
        "promptly (first: when it fails the other checks are skipped)",
        _checks.check_connects,
    ),
    Check(
        "exactly_once",
        1,
        "every event reaches every matching listener on every node exactly once; own "
        "listeners only with echo=True",
        _checks.check_exactly_once,
    ),
    Check(
        "payload_sizes",
        1,
        "events of 1 B, 64 KiB and up to the transport's max_event_bytes arrive intact; one "
        "over it makes emit raise EventTooLargeError naming the limit",
        _checks.check_payload_sizes,
    ),
    Check(
        "order_under_load",
        2,
        "events from one emitter reach each listener in emit order (10,000 flat out)",
        _checks.check_order_under_load,
    ),
    Check(
        "registration_order",
        3,
        "listeners on one node fire in registration order, exact and wildcard alike",
        _checks.check_registration_order,
    ),
    Check(
        "listener_errors_isolated",
        4,
        "a raising listener stops neither the others nor the bus; counted and reported",
        _checks.check_listener_errors_isolated,
    ),
    Check(
        "typed_validation",
        4,
        "invalid data skips only the typed listener; counted in invalid, reported with its path",
        _checks.check_typed_validation,
    ),
    Check(
        "garbage_frames",
        5,
        "undecodable frames are dropped, counted in decode_errors, reported; traffic continues",
        _checks.check_garbage_frames,
    ),
    Check(
        "loss_is_counted",
        6,
        "sequence gaps are counted in lost",
        _checks.check_loss_is_counted,
    ),
    Check(
        "bounded_queues",
        6,
        "full queues drop (counted in dropped, reported) without stalling anything else",
        _checks.check_bounded_queues,
    ),
    Check(
        "close_flushes",
        7,
        "aclose() delivers what was emitted before it and drains async listeners",
        _checks.check_close_flushes,
    ),
    Check(
        "no_leaked_tasks",
        7,
        "aclose() (or cancellation) leaves no task, thread or file descriptor behind",
        _checks.check_no_leaked_tasks,
    ),
    Check(
        "reconnects",
        8,
        "after the hub restarts, traffic resumes without user action",
        _checks.check_reconnects,
        needs_restart_hub=True,
    ),
    Check(
        "invalid_topics",
        9,
        "wildcards in emit and malformed topics or patterns raise ValueError at the call site",
        _checks.check_invalid_topics,
    ),
    Check(
        "presence",
        1,
        "peers() lists the members that announce themselves; on_peer hears them join and "
        "leave; a closed member leaves at once",
        _checks.check_presence,
    ),
    Check(
        "across_processes",
        1,
        "rules 1 and 2 hold between emitters in separate processes",
        _checks.check_across_processes,
    ),
    Check(
        "request_reply",
        10,
        "each request gets one answer, spread over the live responders; a raising responder "
        "gives RemoteError and keeps serving; nobody serving fails within the timeout; a local "
        "responder answers first; listeners never see the traffic",
        _checks.check_request_reply,
    ),
    Check(
        "survey",
        10,
        "a survey gets one reply per responding emitter (errors as Reply.error), returns early "
        "with expect=, and [] by the timeout when nobody serves the topic",
        _checks.check_survey,
    ),
    Check(
        "requests_across_processes",
        10,
        "rule 10 holds with responders and requesters in separate processes",
        _checks.check_requests_across_processes,
    ),
)
"""Every check, in the order of the rules."""


def _one_failure(group: ExceptionGroup[Exception]) -> Exception:
    """What a check raised from inside task groups, as one readable exception: the skip if
    that is all there is, else an ``AssertionError`` listing each failure."""
    leaves = leaves_of(group)  # only Exceptions: an ExceptionGroup holds nothing else
    if all(isinstance(leaf, CheckSkipped) for leaf in leaves):
        return cast(Exception, leaves[0])
    failures = [leaf for leaf in leaves if not isinstance(leaf, CheckSkipped)]
    if len(failures) == 1 and isinstance(failures[0], AssertionError):
        return failures[0]
    return AssertionError(
        f"{len(failures)} failures: "
        + "; ".join(
            str(leaf) if isinstance(leaf, AssertionError) else describe_failure(leaf)
            for leaf in failures
        )
    )


def get_check(name: str) -> Check:
    """The check called ``name``; ``KeyError`` lists the known names."""
    for check in CHECKS:
        if check.name == name:
            return check
    raise KeyError(f"no conformance check {name!r}; known: {', '.join(c.name for c in CHECKS)}")


FIRST = "connects"
"""The check that runs first; when it fails the others are skipped with its reason."""

_unconnected: weakref.WeakKeyDictionary[MakeURL, str] = weakref.WeakKeyDictionary()
"""``make_url`` -> why :data:`FIRST` failed on it (for :func:`run_check`, one check a call)."""


def _first_failed(make_url: MakeURL) -> str | None:
    try:
        return _unconnected.get(make_url)
    except TypeError:  # a callable that takes no weak reference: no memory, no skipping
        return None


def _remember_first(make_url: MakeURL, failure: str | None) -> None:
    try:
        if failure is None:
            _unconnected.pop(make_url, None)
        else:
            _unconnected[make_url] = failure
    except TypeError:
        pass


def _not_run(failure: str) -> str:
    return f"not run: the first check, {FIRST}, failed on this make_url: {failure}"


async def run_check(
    check: Check, make_url: MakeURL, *, restart_hub: RestartHub | None = None
) -> None:
    """Run one check under pytest: :class:`CheckSkipped` becomes ``pytest.skip``, and so does
    every check after :data:`FIRST` failed with the same ``make_url`` (a dead transport fails
    once, in seconds, instead of once per check after its whole deadline)."""
    import pytest

    failure = _first_failed(make_url) if check.name != FIRST else None
    if failure is not None:
        pytest.skip(f"{check.name}: {_not_run(failure)}")
    try:
        await check(make_url, restart_hub=restart_hub)
    except CheckSkipped as exc:
        pytest.skip(f"{check.name}: {exc}")
    except AssertionError as exc:
        if check.name == FIRST:
            _remember_first(make_url, str(exc))
        raise
    if check.name == FIRST:
        _remember_first(make_url, None)


@dataclass(frozen=True)
class CheckResult:
    name: str
    outcome: Literal["passed", "skipped", "failed"]
    detail: str
    seconds: float

    def __str__(self) -> str:
        detail = f": {self.detail}" if self.detail else ""
        return f"{self.name} {self.outcome} ({self.seconds:.2f} s){detail}"


async def run_all(
    make_url: MakeURL,
    *,
    restart_hub: RestartHub | None = None,
    checks: Sequence[Check] = CHECKS,
    raise_on_failure: bool = True,
) -> list[CheckResult]:
    """Run every check in turn and return what happened to each.

    With ``raise_on_failure`` (the default) an ``AssertionError`` listing every failed
    check is raised after all have run, so one call in a test is enough. When :data:`FIRST`
    fails, the checks after it are skipped with its reason.
    """
    results: list[CheckResult] = []
    first_failure: str | None = None
    for check in checks:
        started = time.perf_counter()
        if first_failure is not None:
            results.append(CheckResult(check.name, "skipped", _not_run(first_failure), 0.0))
            continue
        try:
            await check(make_url, restart_hub=restart_hub)
        except CheckSkipped as exc:
            outcome: Literal["passed", "skipped", "failed"] = "skipped"
            detail = str(exc)
        except AssertionError as exc:
            outcome, detail = "failed", str(exc)
            if check.name == FIRST:
                first_failure = detail
        else:
            outcome, detail = "passed", ""
        results.append(CheckResult(check.name, outcome, detail, time.perf_counter() - started))
    failed = [result for result in results if result.outcome == "failed"]
    if failed and raise_on_failure:
        raise AssertionError(
            f"{len(failed)} of {len(results)} conformance checks failed:\n"
            + "\n".join(f"- {result}" for result in failed)
        )
    return results


def parametrize(argname: str = "check") -> pytest.MarkDecorator:
    """``@parametrize()`` = ``pytest.mark.parametrize("check", CHECKS, ids=str)``."""
    import pytest

    return pytest.mark.parametrize(argname, CHECKS, ids=str)


__all__ = [
    "CHECKS",
    "FIRST",
    "Check",
    "CheckResult",
    "get_check",
    "parametrize",
    "run_all",
    "run_check",
]
