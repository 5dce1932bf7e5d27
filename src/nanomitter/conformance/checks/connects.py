"""The first check: emitters hear each other within seconds, and idle ones close promptly.

It runs first and fails fast (:data:`CONNECT_DEADLINE`, not the 20 s every other check may
wait), so a transport that delivers nothing fails the suite in seconds; ``run_all`` and
``run_check`` then skip the other checks with its reason instead of letting each one wait.
"""

from __future__ import annotations

from ..harness import Cluster, MakeURL, current_deadline, deadline, fresh_url

CONNECT_DEADLINE = 10.0
"""Seconds three fresh emitters get to hear each other (capped by the current deadline)."""

CLOSE_BOUND = 1.0
"""Seconds an idle emitter's ``aclose()`` may take: well inside what a close may spend
(the emitter gives a stuck ``receive()`` 1 s before it reports it and goes on)."""


async def check_connects(make_url: MakeURL) -> None:
    """Rule 1, first: three emitters on a fresh URL hear each other within
    :data:`CONNECT_DEADLINE` seconds, and each, idle, closes within :data:`CLOSE_BOUND`.
    """
    url, _ = fresh_url(make_url)
    cluster = Cluster(url)
    nodes = [cluster.node(name) for name in "ABC"]
    with deadline(min(CONNECT_DEADLINE, current_deadline())):
        async with cluster:
            pass  # opening is the handshake: every node hears every other one
    slow = [
        f"node {node.name} took {node.close_seconds:.2f} s"
        for node in nodes
        if node.close_seconds > CLOSE_BOUND
    ]
    if slow:
        raise AssertionError(
            f"aclose() of an idle emitter must return within {CLOSE_BOUND:g} s: "
            f"{'; '.join(slow)} (does the transport's aclose() wait on something that never "
            "comes, or fail to wake its receive()?)"
        )
