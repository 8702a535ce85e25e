"""helpers.statistics: parsing the statistics API, and reading until the counters agree."""

from __future__ import annotations

import time
from typing import Any

import pytest

from helpers import statistics
from helpers.statistics import (
    ModelStats,
    StatisticsWarning,
    model_stats,
    parse_statistics,
    settled_stats,
    wait_for,
)


def entry(name: str, version: str, success: int, inferences: int, batches: dict[int, int]) -> dict:
    """One ``model_stats`` entry as the HTTP API answers it (gRPC's JSON gives strings)."""

    def count(n: int, ns: int = 0) -> dict[str, Any]:
        return {"count": str(n), "ns": str(ns)}

    return {
        "name": name,
        "version": version,
        "inference_count": str(inferences),
        "execution_count": str(sum(batches.values())),
        "inference_stats": {
            "success": count(success),
            "fail": count(0),
            "queue": count(success, 1000 * success),
            "compute_input": count(success),
            "compute_infer": count(success, 5000 * success),
            "compute_output": count(success),
            "cache_hit": count(0),
            "cache_miss": count(0),
        },
        "batch_stats": [
            {"batch_size": size, "compute_infer": count(n, 7000 * n)} for size, n in batches.items()
        ],
    }


class FakeClient:
    """A stand-in HTTP client answering each statistics read with the next prepared answer."""

    def __init__(self, *answers: dict) -> None:
        self.answers = list(answers)
        self.reads = 0

    def get_inference_statistics(self, model: str = "", version: str = "") -> dict:
        answer = self.answers[min(self.reads, len(self.answers) - 1)]
        self.reads += 1
        return answer


def test_parse_sums_versions_and_reads_grpc_strings():
    raw = {
        "model_stats": [
            entry("m", "1", 3, 3, {1: 3}),
            entry("m", "2", 8, 8, {4: 2}),
            entry("other", "1", 1, 2, {2: 1}),
        ]
    }
    stats = parse_statistics(raw)
    assert stats["m"] == ModelStats(
        inference_count=11,
        execution_count=5,
        success_count=11,
        queue_ns=11_000,
        compute_infer_ns=55_000,
        batches={1: 3, 4: 2},
        batch_infer_ns={1: 21_000, 4: 14_000},
    )
    assert stats["other"].batches == {2: 1} and stats["other"].executed_inferences == 2


def snapshot(inferences: int, executions: int, successes: int, **more: Any) -> ModelStats:
    """Counters as one statistics read could see them, by name (the field order has moved before)."""
    return ModelStats(
        inference_count=inferences, execution_count=executions, success_count=successes, **more
    )


def test_a_snapshot_between_a_request_and_its_execution_is_not_consistent():
    assert snapshot(8, 8, 8, batches={1: 8}).consistent()
    assert snapshot(8, 2, 8, batches={4: 2}).consistent()
    assert snapshot(8, 2, 2, batches={4: 2}).consistent()  # two requests of 4 images
    # the 9th request is counted, its execution not yet
    assert not snapshot(9, 2, 9, batches={4: 2}).consistent()
    # a request's success is counted, its inferences not yet (batch size 1)
    assert not snapshot(8, 8, 9, batches={1: 8}).consistent()
    # success read before an answer overtook the read: fewer requests than executions
    assert not snapshot(9, 9, 8, batches={1: 9}).consistent()
    # execution_count (read last) ahead of the batches (read before it)
    assert not snapshot(8, 9, 8, batches={1: 8}).consistent()
    # a failed execution: its request counted as a failure
    assert snapshot(8, 8, 7, fail_count=1, batches={1: 8}).consistent()
    # cache hits count as successes without inferences; an ensemble counts no execution
    assert snapshot(1, 1, 2, cache_hit_count=1, batches={1: 1}).consistent()
    assert ModelStats(inference_count=5, success_count=5).consistent()


def test_model_stats_reads_again_until_the_counters_agree():
    torn = {"model_stats": [entry("m", "1", 10, 10, {1: 9})]}
    whole = {"model_stats": [entry("m", "1", 10, 10, {1: 10})]}
    client = FakeClient(torn, torn, whole)
    stats = model_stats(client, "m")
    assert client.reads == 3 and stats.execution_count == 10


def test_settled_stats_waits_for_the_answers_it_was_told_of():
    answers = [{"model_stats": [entry("m", "1", n, n, {1: n})]} for n in (18, 19, 20)]
    client = FakeClient(*answers)
    assert settled_stats(client, "m", 20).success_count == 20 and client.reads == 3


def test_waiting_gives_up_after_the_timeout_and_says_so(monkeypatch):
    monkeypatch.setattr(statistics, "POLL_S", 0.001)
    torn = {"model_stats": [entry("m", "1", 10, 10, {1: 9})]}
    start = time.monotonic()
    with pytest.warns(StatisticsWarning, match="statistics of 'm'"):
        stats = model_stats(FakeClient(torn), "m", timeout=0.1)
    assert stats.execution_count == 9 and time.monotonic() - start < 1
    with pytest.warns(StatisticsWarning, match="never: not reached within 0.05 s"):
        assert wait_for(lambda: 1, lambda value: value > 1, "never", timeout=0.05) == 1
