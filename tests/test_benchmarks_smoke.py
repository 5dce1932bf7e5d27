"""The in-process benchmark still runs (a smoke run; no timing is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parent.parent / "benchmarks" / "memory.py"


def test_memory_benchmark_quick_run_loses_nothing() -> None:
    result = subprocess.run(
        [sys.executable, str(BENCHMARK), "--quick", "--markdown"],
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for contender in ("pyee", "broadcaster", "nanomitter", "trio"):
        assert contender in out
    assert "| scenario |" in out
    assert "LOSS" not in out
    assert "LOST" not in out
