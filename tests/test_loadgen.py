"""The fallback load generator (helpers.loadgen) against a real embedded Triton.

One short sweep of the tiny ONNX model (max batch 8, 50 ms max queue delay): at concurrency 4
the batcher waits out its delay and runs 4 requests together, at 8 it fills whole batches.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers.loadgen import Payload, sweep
from helpers.perf_analyzer import RESULT_COLUMNS
from helpers.server import TritonServer
from tests.tiny_models import sample_batch

LEVELS = (4, 8)
SPLIT = (
    "server_queue_ms",
    "server_compute_input_ms",
    "server_compute_infer_ms",
    "server_compute_output_ms",
)


@pytest.fixture(scope="module")
def result(tiny_repository: Path) -> pd.DataFrame:
    with TritonServer(tiny_repository, models=["tiny_onnx"]) as server:
        return sweep(
            server.grpc_url,
            "tiny_onnx",
            Payload({"images": sample_batch(1)}, ["scores"]),
            LEVELS,
            warmup_s=0.5,
            window_s=2.0,
            max_windows=3,
            progress=False,
        )


def test_result_has_the_course_schema_and_names_its_tool(result: pd.DataFrame):
    assert list(result.columns[: len(RESULT_COLUMNS)]) == list(RESULT_COLUMNS)
    assert result["concurrency"].tolist() == list(LEVELS)
    assert (result["tool"] == "fallback generator").all()


def test_throughput_times_window_matches_the_servers_success_count(result: pd.DataFrame):
    counted = result["throughput_infer_per_s"] * result["window_s"]
    server = result["server_success_delta"]
    assert (server > 50).all(), "too few requests for a 5% comparison"
    np.testing.assert_allclose(counted, server, rtol=0.05)


def test_latency_percentiles_are_ordered(result: pd.DataFrame):
    columns = ["latency_p50_ms", "latency_p90_ms", "latency_p95_ms", "latency_p99_ms"]
    latencies = result[columns].to_numpy()
    assert (latencies > 0).all()
    assert (np.diff(latencies, axis=1) >= 0).all(), result[columns]


def test_server_side_split_is_at_most_the_client_latency(result: pd.DataFrame):
    split = result[list(SPLIT)]
    assert (split >= 0).all().all()
    assert (split["server_compute_infer_ms"] > 0).all()
    assert (split.sum(axis=1) <= result["latency_avg_ms"]).all(), result[[*SPLIT, "latency_avg_ms"]]
