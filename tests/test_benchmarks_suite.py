"""``make bench``'s suite still runs end to end (a quick run; no timing is asserted).
Marked ``long``: ``make soak`` (and so CI) runs it, ``make test`` does not.

What is asserted: it writes benchmarks.md (a row per transport, payload size and subscriber
count, and the memory table) and benchmarks.png into ``--out-dir``, never docs/; it keeps
what an existing page has outside its markers; a loss-accounting mismatch fails it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SUITE = Path(__file__).resolve().parent.parent / "benchmarks" / "suite.py"
BEGIN, END = "<!-- suite:begin -->", "<!-- suite:end -->"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
pytestmark = pytest.mark.long  # ~80 s: make soak runs it (make test stays under 10 minutes)


def run_suite(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SUITE), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """One quick run for the module: its output and its out-dir (JSON kept in ``runs/``)."""
    out = tmp_path_factory.mktemp("bench")
    result = run_suite(
        "--quick", "--out-dir", str(out), "--results-dir", str(out / "runs"), timeout=150
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout, out


@pytest.mark.timeout(200)
def test_quick_run_writes_the_page_and_the_chart(quick_run: tuple[str, Path]) -> None:
    stdout, out = quick_run
    text = (out / "benchmarks.md").read_text(encoding="utf-8")
    assert text.count(BEGIN) == 1
    assert text.count(END) == 1
    for transport, raw in (("nng", "raw pynng"), ("zmq", "raw pyzmq"), ("nats", "raw nats-py")):
        for size in ("64 B", "1 KiB", "64 KiB"):
            assert f"| {transport} | {size} | 1 |" in text, (transport, size)
        for subs in ("1", "4", "16"):
            assert f"| {transport} | 64 B | {subs} |" in text, (transport, subs)
        assert raw in text
    for contender in ("pyee AsyncIOEventEmitter", "broadcaster memory://"):
        assert contender in text
    assert "](benchmarks.png)" in text
    assert "MISMATCH" not in text
    assert (out / "benchmarks.png").read_bytes().startswith(PNG_SIGNATURE)
    assert "nanomitter/s" in stdout  # the printed table
    assert "p99 raw / nano" in stdout


@pytest.mark.timeout(200)
def test_a_loss_accounting_mismatch_fails_the_suite(
    quick_run: tuple[str, Path], tmp_path: Path
) -> None:
    _, out = quick_run
    runs = shutil.copytree(out / "runs", tmp_path / "runs")
    path = runs / "nng-sweep.json"
    record = json.loads(path.read_text(encoding="utf-8"))
    record["accounting"]["nanomitter"]["mismatched"] = 1
    path.write_text(json.dumps(record), encoding="utf-8")
    result = run_suite(
        "--render-only", "--results-dir", str(runs), "--out-dir", str(tmp_path), timeout=60
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "MISMATCH" in result.stdout
    assert "MISMATCH" in (tmp_path / "benchmarks.md").read_text(encoding="utf-8")


@pytest.mark.timeout(200)
def test_what_is_outside_the_markers_survives(quick_run: tuple[str, Path], tmp_path: Path) -> None:
    _, out = quick_run
    page = tmp_path / "benchmarks.md"
    page.write_text(f"# Title\n\nintro\n\n{BEGIN}\nold\n{END}\n\n## By hand\n\nanalysis\n")
    result = run_suite(
        "--render-only", "--results-dir", str(out / "runs"), "--out-dir", str(tmp_path), timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = page.read_text(encoding="utf-8")
    assert text.startswith("# Title\n\nintro\n\n" + BEGIN)
    assert text.endswith(END + "\n\n## By hand\n\nanalysis\n")
    assert "\nold\n" not in text
    assert "| nng | 64 KiB | 1 |" in text
