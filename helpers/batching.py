"""Make dynamic batching visible from Triton's statistics API (introduced in notebook 03).

``model_stats`` reads one model's cumulative counters; subtracting two snapshots gives what
happened in between: how many requests (inferences) arrived, how many times the model ran
(executions), with which batch sizes, and how long requests waited in the queue versus ran.

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

from helpers.clients import Protocol, client_for, infer_concurrently, protocol_of

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from helpers.server import TritonServer

#: The server-side phases of a request, as the statistics API names them.
PHASES: tuple[str, ...] = ("queue", "compute_input", "compute_infer", "compute_output")


@dataclass(frozen=True)
class ModelStats:
    """Cumulative statistics of one model, summed over its versions (notebook 03).

    ``*_ns`` are summed over requests; ``batches`` maps a batch size to how many executions
    ran with it.
    """

    inference_count: int = 0
    execution_count: int = 0
    success_count: int = 0
    fail_count: int = 0
    queue_ns: int = 0
    compute_input_ns: int = 0
    compute_infer_ns: int = 0
    compute_output_ns: int = 0
    batches: dict[int, int] = field(default_factory=dict)

    def __sub__(self, other: ModelStats) -> ModelStats:
        sizes = set(self.batches) | set(other.batches)
        batches = {s: self.batches.get(s, 0) - other.batches.get(s, 0) for s in sizes}
        scalars = {
            name: getattr(self, name) - getattr(other, name)
            for name in self.__dataclass_fields__
            if name != "batches"
        }
        return ModelStats(**scalars, batches={s: n for s, n in sorted(batches.items()) if n})

    def histogram(self) -> pd.DataFrame:
        """Executions and the inferences they carried, per batch size."""
        rows = [
            {"batch_size": size, "executions": count, "inferences": size * count}
            for size, count in sorted(self.batches.items())
        ]
        return pd.DataFrame(rows, columns=["batch_size", "executions", "inferences"])

    def phase_ms(self) -> dict[str, float]:
        """Average milliseconds per request in each server-side phase (queue, compute ...)."""
        requests = max(self.success_count, 1)
        return {phase: getattr(self, f"{phase}_ns") / requests / 1e6 for phase in PHASES}

    def summary(self) -> dict[str, Any]:
        """Requests, executions, average and largest batch, and the per-request phase split."""
        return {
            "requests": self.success_count,
            "inferences": self.inference_count,
            "executions": self.execution_count,
            "avg_batch": round(self.inference_count / max(self.execution_count, 1), 2),
            "max_batch": max(self.batches, default=0),
            **{f"{phase}_ms": round(ms, 1) for phase, ms in self.phase_ms().items()},
        }


def _count(part: Mapping[str, Any] | None) -> tuple[int, int]:
    part = part or {}
    return int(part.get("count", 0)), int(part.get("ns", 0))  # gRPC JSON gives strings


def model_stats(client: Any, model: str, version: str = "") -> ModelStats:
    """Read a model's statistics with an HTTP or gRPC client (introduced in notebook 03)."""
    if protocol_of(client) == "grpc":
        raw = client.get_inference_statistics(model, version, as_json=True)
    else:
        raw = client.get_inference_statistics(model, version)
    totals: dict[str, int] = {}
    batches: dict[int, int] = {}
    for entry in raw.get("model_stats", []):
        stats = entry.get("inference_stats", {})
        counts = {
            "inference_count": int(entry.get("inference_count", 0)),
            "execution_count": int(entry.get("execution_count", 0)),
            "success_count": _count(stats.get("success"))[0],
            "fail_count": _count(stats.get("fail"))[0],
            **{f"{phase}_ns": _count(stats.get(phase))[1] for phase in PHASES},
        }
        for key, value in counts.items():
            totals[key] = totals.get(key, 0) + value
        for batch in entry.get("batch_stats", []):
            size = int(batch["batch_size"])
            batches[size] = batches.get(size, 0) + _count(batch.get("compute_infer"))[0]
    return ModelStats(**totals, batches=batches)


@dataclass
class Burst:
    """What a burst of concurrent requests did on the server (introduced in notebook 03)."""

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
    """Send ``requests`` from ``concurrency`` threads; return the statistics delta (notebook 03).

    Triton counts a request when it releases it, a moment after the client has its response,
    so the statistics are read again until every request is counted (``settle_timeout``).
    """
    client = client_for(target, protocol)
    before = model_stats(client, model)
    started = time.perf_counter()
    outputs = infer_concurrently(target, model, requests, concurrency, protocol)
    wall = time.perf_counter() - started
    after = settled_stats(client, model, before.success_count + len(requests), settle_timeout)
    return Burst(label or model, after - before, wall, outputs)


def settled_stats(client: Any, model: str, success_count: int, timeout: float = 10.0) -> ModelStats:
    """Read the statistics until ``success_count`` requests are counted, or ``timeout`` s (notebook 03)."""
    deadline = time.monotonic() + timeout
    stats = model_stats(client, model)
    while stats.success_count < success_count and time.monotonic() < deadline:
        time.sleep(0.02)
        stats = model_stats(client, model)
    return stats


def bursts_frame(bursts: Sequence[Burst]) -> pd.DataFrame:
    """One row per burst (introduced in notebook 03)."""
    return pd.DataFrame([b.row() for b in bursts]).set_index("run")


def plot_bursts(bursts: Sequence[Burst]) -> Figure:
    """Batch-size histogram and queue-vs-compute split of each burst, side by side (notebook 03)."""
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
