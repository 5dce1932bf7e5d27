"""The README's example must run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert blocks, "README has no python example"
    result = subprocess.run(
        [sys.executable, "-c", blocks[0]], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "hub saw stockprice {'ticker': 'AAPL', 'price': 251.3}" in result.stdout
    assert "typed: AAPL 251.3" in result.stdout
    assert "stats: 1 received, 0 lost 1" in result.stdout
