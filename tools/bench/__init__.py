"""Benchmarks that print ratios measured in one run: ``python -m tools.bench <name>``.

Each benchmark is a module here with ``run(args) -> dict[str, float]`` that prints what it
measured and returns its headline figures; ``__main__`` prints them last as
``<name>: key=value key=value``. Benchmarks stop every server they start and exit
non-zero with a clear message when they cannot run on this machine.
"""

from __future__ import annotations

import os

#: Benchmark name -> module (under tools.bench) that implements it.
BENCHMARKS: dict[str, str] = {
    "served-vs-inprocess": "served_vs_inprocess",
    "batching": "batching",
    "whisper": "whisper",
    "fastapi-vs-triton": "fastapi_vs_triton",
    "gpu": "gpu",
    "pipeline": "pipeline",
    "scheduling": "scheduling",
}


class CannotRun(RuntimeError):
    """This benchmark cannot run on this machine; the message says why."""


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, for the record a benchmark prints."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def headline(name: str, figures: dict[str, float]) -> str:
    """Format the last line a benchmark prints: ``name: key=value ...``."""
    return f"{name}: " + " ".join(f"{key}={_number(value)}" for key, value in figures.items())


def _number(value: float) -> str:
    """Three significant digits; whole numbers from 1,000 up rather than 2.13e+03."""
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.3g}"
