"""Make dynamic batching visible from Triton's statistics API (introduced in notebook 04).

``model_stats`` (from ``helpers.statistics``, the one reader of the statistics API) reads a
model's cumulative counters; subtracting two snapshots gives what happened in between: how
many requests (inferences) arrived, how many times the model ran (executions), with which
batch sizes, and how long requests waited in the queue versus ran.

    before = model_stats(client, "yolo11n_onnx")
    ...  # send requests
    delta = model_stats(client, "yolo11n_onnx") - before
    delta.histogram()   # batch size -> executions
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from helpers.clients import Protocol, client_for, infer_concurrently
from helpers.statistics import PHASES, ModelStats, model_stats, settled_stats

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from helpers.server import TritonServer


@dataclass
class Burst:
    """What a burst of concurrent requests did on the server (introduced in notebook 04)."""

    label: str
    stats: ModelStats
    wall_s: float
    outputs: list[dict[str, np.ndarray]] = field(repr=False, default_factory=list)

    def row(self) -> dict[str, Any]:
        """One table row: the statistics summary, wall time and requests per second."""
        summary = self.stats.summary()
        return {
            "run": self.label,
            **summary,
            "wall_s": round(self.wall_s, 2),
            "requests_per_s": round(summary["requests"] / self.wall_s, 2),
        }


def burst(
    target: TritonServer | str,
    model: str,
    requests: Sequence[Mapping[str, np.ndarray]],
    concurrency: int = 8,
    protocol: Protocol = "grpc",
    label: str = "",
    settle_timeout: float = 10.0,
) -> Burst:
    """Send ``requests`` from ``concurrency`` threads; return the statistics delta (notebook 04).

    Triton counts a request a moment after the client has its response, so the statistics
    are read again until every request is counted (``settle_timeout``; ``settled_stats``).
    """
    client = client_for(target, protocol)
    before = model_stats(client, model)
    started = time.perf_counter()
    outputs = infer_concurrently(target, model, requests, concurrency, protocol)
    wall = time.perf_counter() - started
    after = settled_stats(client, model, before.success_count + len(requests), settle_timeout)
    return Burst(label or model, after - before, wall, outputs)


def bursts_frame(bursts: Sequence[Burst]) -> pd.DataFrame:
    """One row per burst (introduced in notebook 04)."""
    return pd.DataFrame([b.row() for b in bursts]).set_index("run")


def plot_bursts(bursts: Sequence[Burst]) -> Figure:
    """Batch-size histogram and queue-vs-compute split of each burst, side by side (notebook 04)."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    sizes = sorted({s for b in bursts for s in b.stats.batches})
    width = 0.8 / max(len(bursts), 1)
    for index, item in enumerate(bursts):
        positions = np.arange(len(sizes)) + (index - (len(bursts) - 1) / 2) * width
        counts = [item.stats.batches.get(s, 0) for s in sizes]
        left.bar(positions, counts, width, label=item.label)
    left.set_xticks(range(len(sizes)), [str(s) for s in sizes])
    left.set(xlabel="batch size the model ran", ylabel="executions", title="How requests ran")
    left.legend()
    labels = [b.label for b in bursts]
    bottom = np.zeros(len(bursts))
    for phase in PHASES:
        values = np.array([b.stats.phase_ms()[phase] for b in bursts])
        right.bar(labels, values, bottom=bottom, label=phase.replace("_", " "))
        bottom += values
    right.set(ylabel="ms per request (average)", title="Where a request's server time went")
    right.legend(fontsize=8)
    for axis in (left, right):
        axis.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig
