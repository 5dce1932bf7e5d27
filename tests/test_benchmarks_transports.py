"""The transport benchmarks still run across processes (smoke runs; no timing is asserted).

What is asserted: both contenders produce a table row for every case, and the loss each
library reports (nanomitter's ``stats().lost``, the raw library's sequence-gap count) equals
the loss the benchmark observed, in every trial window.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.mark.parametrize(
    ("script", "raw"),
    [("nng.py", "raw pynng"), ("zmq_bench.py", "raw pyzmq"), ("nats_bench.py", "raw nats-py")],
    ids=["nng", "zmq", "nats"],
)
def test_benchmark_quick_run_accounts_for_every_loss(script: str, raw: str) -> None:
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--quick", "--count", "5000", "--markdown"],
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "| payload | subs | contender |" in out
    for size in ("64 B", "1024 B"):
        for subs in ("1", "4"):
            for contender in (raw, "nanomitter"):
                assert f"| {size} | {subs} | {contender} |" in out, (size, subs, contender)
    accounting = re.findall(r"loss accounting, (\S+): .* windows: (\w+)", out)
    assert sorted(name for name, _ in accounting) == ["nanomitter", "raw"], out
    assert all(verdict == "match" for _, verdict in accounting), out
    assert "MISMATCH" not in out
