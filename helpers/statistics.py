"""The one reader of Triton's statistics API (introduced in notebook 04).

Triton counts a request in two steps, after its answer has gone out: the backend reports the
request (``success``, ``inference_count``, the queue and compute times), then the execution
that ran it (``execution_count``, ``batch_stats``). A read can fall between the two, or
before the first, so counters read while requests run, or right after the last answer, can
disagree or fall short (seen: ``requests_per_execution`` 1.00057 with batching off; with
6 clients on the tiny ONNX model, 4 of 61,156 reads were torn so, on an idle 2-core machine;
and 1.00099 once in 20 runs under load, from a read whose ``success`` lagged its executions).

``model_stats`` therefore reads again until the snapshot is consistent: every request
counted is also counted in an execution (``ModelStats.consistent``). Where the
caller knows how many answers it got, ``settled_stats`` also waits until that many requests
are counted. Both give up after ``timeout`` seconds, return what they read and say so with a
``StatisticsWarning``. ``wait_for`` is the waiting loop itself, for other counters.

    before = model_stats(client, "yolo11n_onnx")
    ...  # send 16 requests
    delta = settled_stats(client, "yolo11n_onnx", before.success_count + 16) - before
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pandas as pd

#: The server-side phases of a request, as the statistics API names them.
PHASES: tuple[str, ...] = ("queue", "compute_input", "compute_infer", "compute_output")
#: How long a reader waits for counters to agree or catch up before it returns what it has.
TIMEOUT_S = 10.0
#: Pause between two reads while waiting.
POLL_S = 0.01

T = TypeVar("T")


class StatisticsWarning(UserWarning):
    """Counters did not agree or catch up within the timeout; the values returned may be short."""


@dataclass(frozen=True)
class ModelStats:
    """Cumulative statistics of one model, summed over its versions (notebook 04).

    ``*_ns`` are summed over requests; ``batches`` maps a batch size to how many executions
    ran with it, ``batch_infer_ns`` to the compute-infer time those executions took.
    """

    inference_count: int = 0
    execution_count: int = 0
    success_count: int = 0
    success_ns: int = 0  # from each request's arrival to its answer, summed (an ensemble's too)
    fail_count: int = 0
    queue_ns: int = 0
    compute_input_ns: int = 0
    compute_infer_ns: int = 0
    compute_output_ns: int = 0
    batches: dict[int, int] = field(default_factory=dict)
    cache_hit_count: int = 0
    cache_miss_count: int = 0
    batch_infer_ns: dict[int, int] = field(default_factory=dict)

    def __sub__(self, other: ModelStats) -> ModelStats:
        return self._combine(other, -1)

    def __add__(self, other: ModelStats) -> ModelStats:
        return self._combine(other, 1)

    def _combine(self, other: ModelStats, sign: int) -> ModelStats:
        values: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            mine, theirs = getattr(self, name), getattr(other, name)
            if isinstance(mine, dict):  # per batch size; sizes that sum to 0 are left out
                sums = {s: mine.get(s, 0) + sign * theirs.get(s, 0) for s in {*mine, *theirs}}
                values[name] = {s: n for s, n in sorted(sums.items()) if n}
            else:
                values[name] = mine + sign * theirs
        return ModelStats(**values)

    @property
    def executed_inferences(self) -> int:
        """Inferences carried by the counted executions: sum of batch size x executions."""
        return sum(size * count for size, count in self.batches.items())

    def consistent(self) -> bool:
        """Every request counted is counted in an execution too, in full, and the other way.

        Backends report each request of an execution (``inference_count``, then
        ``success``) before the execution itself (``execution_count`` and ``batch_stats``,
        in one step), and the API reads them without a lock, ``success`` first and
        ``execution_count`` last. A read in between has fewer executed inferences than
        counted ones, or fewer successes than the inferences allow (each non-cached request
        carries at least one); one that an answer overtakes has fewer requests than
        executions (each carries at least one), or ``execution_count`` ahead of the batches.
        Partly failed executions carry more inferences, cache hits none: both fine. A model
        with no execution counted (an ensemble, or none yet) has nothing to check.
        """
        if not self.batches:
            return True
        executions = sum(self.batches.values())
        successes = self.success_count - self.cache_hit_count
        return (
            self.executed_inferences >= self.inference_count >= successes
            and self.success_count + self.fail_count >= executions == self.execution_count
        )

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


def parse_statistics(raw: Mapping[str, Any]) -> dict[str, ModelStats]:
    """``{model: ModelStats}`` from a statistics API answer (JSON, HTTP or gRPC), versions summed."""
    found: dict[str, ModelStats] = {}
    for entry in raw.get("model_stats", []):
        stats = entry.get("inference_stats", {})
        batches: dict[int, int] = {}
        batch_infer_ns: dict[int, int] = {}
        for batch in entry.get("batch_stats", []):
            size = int(batch["batch_size"])
            count, ns = _count(batch.get("compute_infer"))
            batches[size] = batches.get(size, 0) + count
            batch_infer_ns[size] = batch_infer_ns.get(size, 0) + ns
        success_count, success_ns = _count(stats.get("success"))
        one = ModelStats(
            inference_count=int(entry.get("inference_count", 0)),
            execution_count=int(entry.get("execution_count", 0)),
            success_count=success_count,
            success_ns=success_ns,
            fail_count=_count(stats.get("fail"))[0],
            **{f"{phase}_ns": _count(stats.get(phase))[1] for phase in PHASES},
            batches=batches,
            cache_hit_count=_count(stats.get("cache_hit"))[0],
            cache_miss_count=_count(stats.get("cache_miss"))[0],
            batch_infer_ns=batch_infer_ns,
        )
        name = entry["name"]
        found[name] = found[name] + one if name in found else one
    return found


def read_statistics(client: Any, model: str = "", version: str = "") -> dict[str, ModelStats]:
    """One read of the statistics API with an HTTP or gRPC tritonclient client; every model if ``model`` is empty."""
    if type(client).__module__.startswith("tritonclient.grpc"):
        raw = client.get_inference_statistics(model, version, as_json=True)
    else:
        raw = client.get_inference_statistics(model, version)
    return parse_statistics(raw)


def wait_for(
    read: Callable[[], T], done: Callable[[T], bool], what: str, timeout: float = TIMEOUT_S
) -> T:
    """Call ``read()`` until ``done(value)``; after ``timeout`` s return the last value and warn ``what``."""
    deadline = time.monotonic() + timeout
    value = read()
    while not done(value):
        if time.monotonic() > deadline:
            warnings.warn(
                f"{what}: not reached within {timeout:g} s; returning the last read: {value}",
                StatisticsWarning,
                stacklevel=2,
            )
            return value
        time.sleep(POLL_S)
        value = read()
    return value


def model_stats(
    client: Any,
    model: str,
    version: str = "",
    *,
    until: Callable[[ModelStats], bool] | None = None,
    timeout: float = TIMEOUT_S,
) -> ModelStats:
    """A consistent snapshot of a model's statistics (``ModelStats.consistent``), for which ``until`` holds (notebook 04)."""

    def read() -> ModelStats:
        return read_statistics(client, model, version).get(model, ModelStats())

    def done(stats: ModelStats) -> bool:
        return stats.consistent() and (until is None or until(stats))

    return wait_for(read, done, f"statistics of {model!r} consistent and caught up", timeout)


def settled_stats(
    client: Any, model: str, success_count: int, timeout: float = TIMEOUT_S
) -> ModelStats:
    """``model_stats`` once at least ``success_count`` successful requests are counted (notebook 04).

    Triton counts a request a moment after its answer has gone out: read right after the last
    answer, the counters can be short.
    """
    return model_stats(
        client, model, until=lambda stats: stats.success_count >= success_count, timeout=timeout
    )
