"""``nanomitter demo``: the original nanomitter's stock-price story, as separate processes.

The story itself lives in :mod:`nanomitter.demo` (a hub logging every event with ``*``,
workers emitting ``stockprice`` every 300 ms); this command checks its options and runs it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import click

from .common import RuntimeFailure, parse_url, url_option

DemoRun = Callable[[str | None, float, int], int]


@click.command(short_help="Run the stock-price demo: a hub and workers, labelled.")
@url_option
@click.option(
    "--seconds",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="how long the story runs (0: until Ctrl-C)",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1, max=16),
    default=2,
    show_default=True,
    help="worker processes emitting stockprice",
)
def demo(url: str | None, seconds: float, workers: int) -> int:
    """Run the stock-price demo: a hub logging every event, workers emitting prices.

    Each process is labelled in the output, so you see who sent what. It runs on the
    default bus (tcp://127.0.0.1:55555) unless --url or $NANOMITTER_URL says otherwise.
    """
    if url is not None:
        parse_url(url)  # scheme and option names: a usage error before anything starts
    return story()(url, seconds, workers)


def story() -> DemoRun:
    """``nanomitter.demo.run``, imported only when the demo runs."""
    try:
        module = importlib.import_module("nanomitter.demo")
    except ModuleNotFoundError as exc:
        if exc.name != "nanomitter.demo":
            raise
        raise RuntimeFailure("this nanomitter has no demo (nanomitter.demo is missing)") from None
    run: DemoRun = module.run
    return run
