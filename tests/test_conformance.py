"""The conformance suite run against memory://: msgpack on asyncio and trio, the other codecs
on one backend each (the codec and the backend never meet)."""

from __future__ import annotations

import logging
import subprocess
import sys
import uuid
from collections.abc import Callable

import anyio
import pytest

from nanomitter import conformance, transports
from nanomitter.conformance.example import ExampleTransport
from nanomitter.conformance.harness import Signal
from nanomitter.conformance.quiet import held_logs
from nanomitter.core.report import LogProblems
from peers import variants_on_backends

CODECS = ["", "?codec=json", "?codec=none"]


def memory_urls(query: str = "") -> Callable[[], str]:
    """A ``make_url`` for memory://: a bus name no other check uses."""

    def make_url() -> str:
        return f"memory://conformance-{uuid.uuid4().hex}{query}"

    return make_url


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("query", "anyio_backend"),
    variants_on_backends("", CODECS[1:]),
    ids=lambda value: value.removeprefix("?codec=") or "msgpack",
)
@conformance.parametrize()
async def test_memory_conforms(check: conformance.Check, query: str, anyio_backend: str) -> None:
    await conformance.run_check(check, memory_urls(query))


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # each check runs on both above
async def test_run_all_reports_each_check(anyio_backend: str) -> None:
    results = await conformance.run_all(memory_urls())
    outcomes = {result.name: result.outcome for result in results}
    assert list(outcomes) == [check.name for check in conformance.CHECKS]
    assert outcomes.pop("reconnects") == "skipped"  # memory:// has no hub to restart
    assert outcomes.pop("across_processes") == "skipped"  # nor does it cross processes
    assert outcomes.pop("requests_across_processes") == "skipped"
    assert set(outcomes.values()) == {"passed"}
    assert all(str(result).startswith(result.name) for result in results)


@pytest.mark.anyio
async def test_run_check_turns_a_missing_capability_into_a_skip(anyio_backend: str) -> None:
    with pytest.raises(pytest.skip.Exception, match="does not cross processes"):
        await conformance.run_check(conformance.get_check("across_processes"), memory_urls())
    with pytest.raises(conformance.CheckSkipped, match="restart_hub"):
        await conformance.check_reconnects(memory_urls())


@pytest.mark.anyio
async def test_run_all_collects_failures(anyio_backend: str) -> None:
    async def broken(make_url: conformance.MakeURL) -> None:
        raise AssertionError("event 'x' #17 delivered twice to listener on node B")

    check = conformance.Check("broken", 1, "a check that always fails", broken)
    with pytest.raises(AssertionError, match=r"1 of 2 conformance checks failed:\n- broken"):
        await conformance.run_all(memory_urls(), checks=[check, conformance.CHECKS[0]])
    results = await conformance.run_all(memory_urls(), checks=[check], raise_on_failure=False)
    assert [r.outcome for r in results] == ["failed"]
    assert "delivered twice" in results[0].detail


def test_checks_cover_every_rule() -> None:
    assert {check.rule for check in conformance.CHECKS} == set(range(1, 11))  # 10: requests
    assert len({check.name for check in conformance.CHECKS}) == len(conformance.CHECKS)
    assert str(conformance.get_check("exactly_once")) == "exactly_once"
    with pytest.raises(KeyError, match="known: connects, exactly_once"):
        conformance.get_check("nope")


def test_deadline_is_scoped() -> None:
    default = conformance.current_deadline()
    with conformance.deadline(1.5):
        assert conformance.current_deadline() == 1.5
    assert conformance.current_deadline() == default
    with pytest.raises(ValueError, match="positive"), conformance.deadline(0):
        pass


@pytest.mark.anyio
async def test_signal_wait_times_out_without_a_pulse(anyio_backend: str) -> None:
    signal = Signal()
    assert not await signal.wait(lambda: False, 0.01)
    with (
        pytest.raises(AssertionError, match=r"nothing came \(gave up after 0.05 s\)"),
        conformance.deadline(0.05),
    ):
        await signal.expect(lambda: False, lambda: "nothing came")


RUN_ALL_ON_MEMORY = """
import uuid
import anyio
from nanomitter import conformance

def make_url() -> str:
    return f"memory://quiet-{uuid.uuid4().hex}"

results = anyio.run(conformance.run_all, make_url)
print(" ".join(result.outcome for result in results))
"""


def test_run_all_prints_nothing_for_what_it_provokes() -> None:
    """A third party's ``run_all`` shows no traceback of the suite's own failing listeners."""
    done = subprocess.run(
        [sys.executable, "-c", RUN_ALL_ON_MEMORY],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "failed" not in done.stdout
    assert done.stderr == ""


def test_held_logs_let_through_what_nobody_claims(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("nanomitter.test")
    with caplog.at_level(logging.INFO, logger="nanomitter"), held_logs() as held:
        log.error("provoked on purpose")
        log.warning("something else went wrong")
        assert caplog.messages == []  # held: nothing reaches the user's handlers yet
        (mine,) = held.claim(lambda record: "on purpose" in record.getMessage())
        assert mine.levelno == logging.ERROR
    assert caplog.messages == ["something else went wrong"]
    assert logging.getLogger("nanomitter").propagate


@pytest.mark.anyio
async def test_a_hook_that_raises_must_not_silence_problems(
    anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Node D's hook raises on purpose; its fallback must log what the hook could not take."""
    monkeypatch.setattr(LogProblems, "__call__", lambda self, problem: None)
    with pytest.raises(AssertionError, match="none of its 20 ListenerErrors was logged instead"):
        await conformance.check_listener_errors_isolated(memory_urls())


@pytest.mark.anyio
async def test_failures_inside_task_groups_arrive_as_one_assertion_error(
    anyio_backend: str,
) -> None:
    async def one(make_url: conformance.MakeURL) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(fail, "event 'x' #3 never arrived")

    async def fail(message: str) -> None:
        raise AssertionError(message)

    async def several(make_url: conformance.MakeURL) -> None:
        raise ExceptionGroup(
            "two tasks",
            [AssertionError("node B got 2 of 3"), ExceptionGroup("inner", [ValueError("bad")])],
        )

    async def skipped(make_url: conformance.MakeURL) -> None:
        raise ExceptionGroup("skip", [conformance.CheckSkipped("no hub to restart")])

    with pytest.raises(AssertionError, match=r"^event 'x' #3 never arrived$"):
        await conformance.Check("one", 1, "", one)(memory_urls())
    with pytest.raises(AssertionError, match=r"^2 failures: node B got 2 of 3; ValueError: bad$"):
        await conformance.Check("several", 1, "", several)(memory_urls())
    with pytest.raises(conformance.CheckSkipped, match="no hub to restart"):
        await conformance.Check("skipped", 1, "", skipped)(memory_urls())


@pytest.mark.anyio
async def test_the_shipped_example_transport_passes_the_whole_suite(anyio_backend: str) -> None:
    """docs/conformance.md's worked example, run as its docstring says."""
    transports.register("example", ExampleTransport)
    try:
        results = await conformance.run_all(lambda: f"example://{uuid.uuid4().hex}")
    finally:
        transports.unregister("example")
    skipped = {result.name for result in results if result.outcome == "skipped"}
    assert skipped == {"reconnects", "across_processes", "requests_across_processes"}
