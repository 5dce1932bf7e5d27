"""The suite must catch deliberately broken transports, each with the promise it breaks."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import conformance_toys
from conformance_toys import LEAKED_SOCKETS, LEAKED_THREAD_RELEASE, restart_memory_hub
from nanomitter import conformance
from nanomitter.transports import transport_class
from peers import BACKENDS

DEADLINE = 1.5
"""Seconds the checks wait before declaring an expected failure (default is 20)."""


def urls(scheme: str) -> Callable[[], str]:
    def make_url() -> str:
        return f"{scheme}://toy-{uuid.uuid4().hex}"

    return make_url


@pytest.fixture
def released_leaks() -> Iterator[None]:
    """Release what the leaking toys leaked, after the test."""
    LEAKED_THREAD_RELEASE.clear()
    yield
    LEAKED_THREAD_RELEASE.set()
    for thread in threading.enumerate():
        if thread.name == "toy-leaked-thread":
            thread.join(timeout=5)
    while LEAKED_SOCKETS:
        LEAKED_SOCKETS.pop().close()


NEEDS_PROC = pytest.mark.skipif(
    not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd to list descriptors"
)


_backends = itertools.cycle(BACKENDS)


def caught(scheme: str, check: str, message: str, *marks: pytest.MarkDecorator) -> Any:
    """A broken toy, the check that must catch it, and what its message must say; on one
    backend each, in turn (the toys break a promise the same way on both, and every check
    runs on both backends in tests/test_conformance.py)."""
    backend = next(_backends)
    return pytest.param(
        scheme, check, message, backend, marks=marks, id=f"{scheme}-{check}-{backend}"
    )


CAUGHT = [
    caught("dupmem", "exactly_once", r"from node \w to .* was delivered twice"),
    caught("dupmem", "order_under_load", r"was delivered twice"),
    caught("reordermem", "order_under_load", r"#\d+ from node \w to .* arrived after .*#\d+"),
    caught("reordermem", "close_flushes", r"arrived after"),
    caught("dropmem", "exactly_once", r"events from node \w to .* never arrived \(#\d+"),
    caught(
        "corruptmem",
        "exactly_once",
        r"changed the data .*: event 'once\.\w+' #\d+ from node (\w) to .* arrived changed: "
        r"data\['node'\] is '\1!' \(str\); sent '\1' \(str\)",
    ),
    caught(
        "hangmem",
        "exactly_once",
        r"problem reports this check did not provoke .* node \w: Problem \(problem\): "
        r"HangingMemory.receive\(\) had not ended 1 s after its aclose\(\)",
    ),
    caught("hangmem", "connects", r"node A: Problem \(problem\): HangingMemory.receive\(\) had"),
    caught(
        "slowclosemem", "connects", r"idle emitter must return within 1 s: node \w took 1\.\d+ s"
    ),
    caught(
        "smallmem",
        "payload_sizes",
        r"emit of an event with 65536 bytes of data raised RuntimeError: message too long",
    ),
    caught("corruptmem", "order_under_load", r"#\d+ from node \w to .* arrived changed"),
    caught("lagmem", "close_flushes", r"right before aclose\(\), which must flush them"),
    caught("leakmem", "no_leaked_tasks", r"threads still alive .*'toy-leaked-thread' \(x\d\)"),
    caught(
        "fdleakmem", "no_leaked_tasks", r"descriptors still open .*: \d+ -> socket:", NEEDS_PROC
    ),
    caught("seqlessmem", "exactly_once", r"seq=0; the transport must carry the sender's seq"),
    caught("swallowmem", "garbage_frames", r"FrameDecodeError reports; 11 bad frames were sent"),
    caught("fragilemem", "garbage_frames", r"emitter crashed: RuntimeError: cannot use unpack"),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("scheme", "name", "message", "anyio_backend"), CAUGHT)
@pytest.mark.usefixtures("released_leaks")
async def test_suite_catches_broken_toy(
    scheme: str, name: str, message: str, anyio_backend: str
) -> None:
    with conformance.deadline(DEADLINE), pytest.raises(AssertionError, match=message):
        await conformance.get_check(name)(urls(scheme))


@pytest.mark.anyio
async def test_reordering_is_not_mistaken_for_duplication(anyio_backend: str) -> None:
    """Without an order requirement the reordering toy delivers everything exactly once."""
    await conformance.check_exactly_once(urls("reordermem"))


@pytest.mark.anyio
async def test_reconnect_check_passes_for_a_hub_that_members_rejoin(anyio_backend: str) -> None:
    await conformance.check_reconnects(urls("restartmem"), restart_hub=restart_memory_hub)


@pytest.mark.anyio
async def test_reconnect_check_catches_members_that_never_rejoin(anyio_backend: str) -> None:
    with (
        conformance.deadline(DEADLINE),
        pytest.raises(AssertionError, match=r"after restart_hub\(\): .* cannot hear each other"),
    ):
        await conformance.check_reconnects(urls("stubbornmem"), restart_hub=restart_memory_hub)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])  # memory:// runs the suite on both
async def test_a_correct_toy_passes_the_whole_suite(anyio_backend: str) -> None:
    """The positive control: the restartable toy breaks nothing, so every check passes."""
    results = await conformance.run_all(urls("restartmem"), restart_hub=restart_memory_hub)
    skipped = {r.name for r in results if r.outcome == "skipped"}
    assert skipped == {"across_processes", "requests_across_processes"}


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # a wait: the backend cannot matter
async def test_a_transport_that_delivers_nothing_fails_once_and_fast(anyio_backend: str) -> None:
    """The first check fails within its own short deadline (not the 20 s default, which
    stays in force here); every other check is skipped with its reason."""
    started = time.perf_counter()
    results = await conformance.run_all(urls("deafmem"), raise_on_failure=False)
    assert time.perf_counter() - started < 60
    first, *rest = results
    assert (first.name, first.outcome) == (conformance.FIRST, "failed")
    assert "cannot hear each other" in first.detail
    assert {r.outcome for r in rest} == {"skipped"}
    assert all(r.detail.startswith("not run: the first check, connects, failed") for r in rest)


@pytest.mark.anyio
async def test_run_check_skips_what_follows_a_failed_first_check(anyio_backend: str) -> None:
    make_url = urls("deafmem")
    with conformance.deadline(DEADLINE), pytest.raises(AssertionError, match="cannot hear"):
        await conformance.run_check(conformance.get_check("connects"), make_url)
    with pytest.raises(pytest.skip.Exception, match="not run: the first check, connects"):
        await conformance.run_check(conformance.get_check("exactly_once"), make_url)
    assert conformance.CHECKS[0].name == conformance.FIRST


def test_toys_are_registered() -> None:
    for scheme, toy in conformance_toys.TOYS.items():
        assert transport_class(scheme) is toy
