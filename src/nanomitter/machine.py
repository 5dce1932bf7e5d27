"""What this machine is, on one line: every measurement we print carries it.

Figures from ``nanomitter bench``, ``benchmarks/`` and the soak reports are only comparable
with the CPU, core count, load and library versions they were taken with.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
from collections.abc import Sequence

__all__ = ["cpu_model", "describe", "load_average", "version"]

LIBRARIES = ("nanomitter", "pynng", "pyzmq", "nats-py", "msgspec", "anyio", "trio")
"""The distributions whose versions a report names unless told otherwise."""


def cpu_model() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo; elsewhere what ``platform`` knows)."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as info:
        for text in info:
            if text.startswith("model name"):
                return text.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def version(name: str) -> str:
    """An installed distribution's version, or "?"."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def load_average() -> str:
    """The 1, 5 and 15 minute load averages ("?" where the OS has none)."""
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def describe(libraries: Sequence[str] = LIBRARIES) -> str:
    """CPU, cores, load, Python, OS and the versions of ``libraries``, on one line."""
    libs = ", ".join(f"{name} {version(name)}" for name in libraries)
    return (
        f"CPU: {cpu_model()}, {os.cpu_count()} cores, load {load_average()}; "
        f"Python {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.system()} {platform.release()} {platform.machine()}; {libs}"
    )
