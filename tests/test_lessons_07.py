"""Notebook 07's lessons: the Triton request built by hand and the load loop, run against a
real server where ``helpers`` cannot be imported."""

from __future__ import annotations

import pytest

from helpers.paths import REPO_ROOT
from helpers.server import TritonServer
from tests.copyable import run_copyable
from tests.reliability_models import add_model, success_count, yolo11n_files

NOTEBOOK = REPO_ROOT / "notebooks" / "07_fastapi_vs_triton.ipynb"
MODEL = "yolo11n_onnx"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repository = tmp_path_factory.mktemp("repository_06")
    add_model(repository, MODEL, MODEL, yolo11n_files(tmp_path_factory)["onnx"])
    with TritonServer(repository, models=[MODEL]) as running:
        yield running


def test_the_load_loop_by_hand_counts_every_request(server, tmp_path) -> None:
    before = success_count(server, MODEL)
    result = run_copyable(
        NOTEBOOK,
        tmp_path,
        provided={
            "TRITON_HTTP_URL": server.http_url,
            "LOOP_SECONDS": 1.5,
            "CONCURRENCY_LEVELS": [1, 2],
        },
        names=["by_hand"],
    )
    row = result["values"]["by_hand"]["Triton"]
    assert row["concurrency"] == 2
    assert row["errors"] == 0
    assert row["requests"] >= 2  # each of the two clients got at least one answer
    assert success_count(server, MODEL, before + row["requests"]) - before == row["requests"]
    assert row["throughput_infer_per_s"] > 0
    assert 0 < row["latency_p50_ms"] <= row["latency_p99_ms"]


def test_the_notebook_and_the_bench_serve_triton_with_the_same_settings() -> None:
    """Notebook 07's parameters and `bench fastapi-vs-triton`'s defaults give one config."""
    from tests.copyable import tagged_cells
    from tools.bench import fastapi_vs_triton

    p: dict = {}
    exec("\n".join(tagged_cells(NOTEBOOK, "parameters")), p)  # noqa: S102 - our notebook
    assert p["TRITON_INSTANCES"] == fastapi_vs_triton.INSTANCES
    assert p["TRITON_PREFERRED_BATCH"] == fastapi_vs_triton.PREFERRED_BATCH
    assert p["MAX_QUEUE_DELAY_US"] == 0
    config = fastapi_vs_triton.triton_config(p["TRITON_INSTANCES"], p["TRITON_PREFERRED_BATCH"])
    assert config["dynamic_batching"]["preferred_batch_size"] == [4]
    assert config["dynamic_batching"].get("max_queue_delay_microseconds", 0) == 0
    assert config["instance_group"][0]["count"] == 2
    assert "preferred_batch_size" not in fastapi_vs_triton.triton_config(2)["dynamic_batching"]
