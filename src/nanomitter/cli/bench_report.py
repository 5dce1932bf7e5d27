"""How ``nanomitter bench`` shows its results: the table, one row (or column) per URL."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from rich import box
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from .bench import Outcome, Settings


def rate_text(value: float) -> str:
    return f"{value / 1000:,.1f}k" if value >= 10_000 else f"{value:,.0f}"


def us_text(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:.1f} ms" if value >= 1000 else f"{value:.0f} µs"


CAPTION = (
    "delivered/s: per subscriber; loss: events that never arrived; lost: stats().lost "
    "against the gaps the subscribers saw (they must match); p50/p99: emit to listener"
)


def _cells(outcomes: Sequence[Outcome], compare: bool) -> list[tuple[str, list[str]]]:
    """The report's columns: a heading and one cell per URL."""
    base = outcomes[0]
    columns: list[tuple[str, list[str]]] = [
        ("URL", [o.plan.display for o in outcomes]),
        ("transport", [o.plan.transport for o in outcomes]),
        ("size", [f"{o.size} B" for o in outcomes]),
        ("subs", [str(o.settings.subscribers) for o in outcomes]),
    ]
    measured: list[tuple[str, Callable[[Outcome], str]]] = [
        ("sent/s", lambda o: rate_text(o.throughput.sent_per_s)),
        ("delivered/s", lambda o: rate_text(o.throughput.mean_delivered_per_s)),
        *([("ratio", lambda o: _ratio_text(ratio_of(base, o)))] if compare else []),
        ("loss", lambda o: f"{o.throughput.loss:.1%}"),
        ("lost (stats / seen)", _lost_text),
        ("p50", lambda o: us_text(o.latency.percentile_us(0.50) if o.latency else None)),
        ("p99", lambda o: us_text(o.latency.percentile_us(0.99) if o.latency else None)),
    ]
    for heading, cell in measured:
        columns.append((heading, ["failed" if o.error else cell(o) for o in outcomes]))
    return columns


def _lost_text(outcome: Outcome) -> str:
    phase = outcome.throughput
    reported = sum(s.reported for s in phase.subscribers)
    observed = sum(s.observed for s in phase.subscribers)
    return f"{reported:,} / {observed:,}" + ("" if outcome.lost_matches else " MISMATCH")


def _ratio_text(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def _title(settings: Settings) -> str:
    how = "flat out" if not settings.rate else f"at {settings.rate:,.0f}/s"
    latency = (
        f"latency at {settings.latency_rate:,.0f}/s for {settings.latency_seconds:g} s"
        if settings.latency_count
        else "no latency phase"
    )
    return f"nanomitter bench: {settings.count:,} events {how}; {latency}"


def table(outcomes: Sequence[Outcome], compare: bool, width: int | None = None) -> Table:
    """A row per URL; if that is wider than ``width``, a column per URL instead."""
    columns = _cells(outcomes, compare)
    title = _title(outcomes[0].settings)
    across = Table(title=title, caption=CAPTION, box=box.SIMPLE_HEAD)
    for number, (heading, _) in enumerate(columns):
        across.add_column(heading, justify="left" if number < 2 else "right", no_wrap=True)
    for row in range(len(outcomes)):
        across.add_row(*(cells[row] for _, cells in columns))
    if width is None or Console(width=10_000).measure(across).maximum <= width:
        return across
    down = Table(title=title, caption=CAPTION, box=box.SIMPLE_HEAD, show_header=False)
    down.add_column(style="bold")
    for _ in outcomes:
        down.add_column(justify="right", overflow="fold")
    for heading, cells in columns:
        down.add_row(heading, *cells)
    return down


def ratio_of(base: Outcome, outcome: Outcome) -> float | None:
    if base.error or outcome.error:
        return None
    first = base.throughput.mean_delivered_per_s
    return outcome.throughput.mean_delivered_per_s / first if first else None


# ---------------------------------------------------------------------------- command
