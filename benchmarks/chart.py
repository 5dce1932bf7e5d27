"""The chart of ``make bench``: nanomitter against each raw library, as one PNG.

Two panels: delivered events/s per transport and payload size (grouped bars, nanomitter
beside raw, the ratio on top), and the fan-out (delivered events/s per subscriber against
the number of subscribers, a line per transport and contender). Drawn with matplotlib's
object API on the Agg canvas: no pyplot state, no display needed. Not a script to run:
``benchmarks/suite.py`` calls ``render``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

Series = Mapping[str, Mapping[int, tuple[float, float]]]
"""transport -> payload size or subscriber count -> (raw events/s, nanomitter events/s)."""

COLOURS = {"nng": "#1f77b4", "zmq": "#d62728", "nats": "#2ca02c"}
RAW_COLOUR = "#b0b0b0"


def size_label(size: int) -> str:
    """64 B, 1 KiB, 64 KiB."""
    return f"{size // 1024} KiB" if size >= 1024 and size % 1024 == 0 else f"{size} B"


def rate_label(value: float, _position: object = None) -> str:
    """An axis tick: 3k, 200k, 1.2M."""
    if value >= 1e6:
        return f"{value / 1e6:g}M"
    if value >= 1e3:
        return f"{value / 1e3:g}k"
    return f"{value:g}"


def _colour(transport: str) -> str:
    return COLOURS.get(transport, "#9467bd")


def sweep_panel(ax: Axes, sweep: Series) -> None:
    """Grouped bars: for each transport and payload size, raw beside nanomitter."""
    width = 0.38
    labels: list[str] = []
    x = 0.0
    ticks: list[float] = []
    for transport, by_size in sweep.items():
        for size, (raw, nano) in sorted(by_size.items()):
            ax.bar(x - width / 2, raw, width, color=RAW_COLOUR, edgecolor="black")
            ax.bar(x + width / 2, nano, width, color=_colour(transport), edgecolor="black")
            if raw > 0:
                ax.annotate(
                    f"{nano / raw:.2f}x",
                    (x + width / 2, nano),
                    textcoords="offset points",
                    xytext=(0, 2),
                    ha="center",
                    fontsize=7,
                )
            ticks.append(x)
            labels.append(f"{transport}\n{size_label(size)}")
            x += 1.0
        x += 0.5  # a gap between transports
    ax.set_xticks(ticks, labels, fontsize=8)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(rate_label))
    ax.set_ylabel("delivered events/s")
    ax.set_title("Payload sweep, 1 subscriber: raw grey, nanomitter coloured, ratio on top")
    ax.grid(axis="y", which="both", alpha=0.3)


def fanout_panel(ax: Axes, fanout: Series) -> None:
    """Lines: delivered events/s per subscriber against the subscriber count."""
    counts: set[int] = set()
    for transport, by_subs in fanout.items():
        subs = sorted(by_subs)
        counts.update(subs)
        colour = _colour(transport)
        raw = [by_subs[n][0] for n in subs]
        nano = [by_subs[n][1] for n in subs]
        ax.plot(subs, raw, "--o", color=colour, alpha=0.6, label=f"raw {transport}")
        ax.plot(subs, nano, "-s", color=colour, label=f"nanomitter {transport}")
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(sorted(counts)))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}"))
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(rate_label))
    ax.set_xlabel("subscribers (each its own process)")
    ax.set_ylabel("delivered events/s per subscriber")
    ax.set_title("Fan-out at 64 B: raw dashed, nanomitter solid")
    ax.grid(which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)


def render(path: Path, title: str, sweep: Series, fanout: Series, notes: Sequence[str]) -> None:
    """Draw both panels into ``path`` (PNG); ``notes`` go in small print at the bottom."""
    fig = Figure(figsize=(13, 5.2), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=(3, 2))
    sweep_panel(left, sweep)
    fanout_panel(right, fanout)
    fig.suptitle(title, fontsize=11)
    if notes:
        fig.supxlabel("\n".join(notes), fontsize=7, color="#444444")
    fig.savefig(path, dpi=100, metadata={"Software": None})
