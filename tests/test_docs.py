"""The docs site: every page is reachable from the nav, and the site builds with --strict."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CONFIG = ROOT / "mkdocs.yml"


def load_config() -> dict[str, Any]:
    """mkdocs.yml as plain data; YAML tags such as ``!relative`` or ``!ENV`` read as None."""
    yaml: Any = pytest.importorskip("yaml")
    loader: Any = type("Loader", (yaml.SafeLoader,), {})  # a subclass: the tags stay local
    loader.add_multi_constructor("!", lambda *_: None)
    loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda *_: None)
    config = yaml.load(CONFIG.read_text(), Loader=loader)
    assert isinstance(config, dict)
    return config


def nav_pages(entry: object) -> list[str]:
    """Every page path in a nav tree: strings, lists, and ``{title: page-or-list}`` maps."""
    if isinstance(entry, str):
        return [] if "://" in entry else [entry]
    if isinstance(entry, list):
        return [page for item in entry for page in nav_pages(item)]
    if isinstance(entry, dict):
        return [page for value in entry.values() for page in nav_pages(value)]
    return []


def test_every_page_is_in_the_nav_and_every_nav_entry_exists() -> None:
    pages = nav_pages(load_config()["nav"])
    on_disk = {path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md")}
    orphans = sorted(on_disk - set(pages))
    assert not orphans, f"pages missing from the nav in mkdocs.yml: {orphans}"
    missing = sorted(set(pages) - on_disk)
    assert not missing, f"nav entries in mkdocs.yml without a page under docs/: {missing}"
    duplicates = sorted({page for page in pages if pages.count(page) > 1})
    assert not duplicates, f"pages listed twice in the nav: {duplicates}"


def test_the_home_page_example_is_the_readme_example() -> None:
    """tests/test_readme.py runs the README's example; the home page must show the same."""

    def first_python_block(path: Path) -> str:
        blocks = re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.DOTALL)
        assert blocks, f"{path.name} has no python example"
        return str(blocks[0])

    assert first_python_block(DOCS / "index.md") == first_python_block(ROOT / "README.md")


def test_the_site_builds_with_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings_handlers.python")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{output}"
    assert (tmp_path / "index.html").exists()
    assert (tmp_path / "reference" / "nanomitter" / "index.html").exists()
