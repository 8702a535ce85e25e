"""Notebook 04's lessons: a closed loop written by hand against a real server, and the
perf_analyzer lines (native and NGC SDK container) shown as text equal to the builders' output."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.commands import format_command
from helpers.model_config import read_config
from helpers.paths import MODEL_REPOSITORY, REPO_ROOT
from helpers.perf_analyzer import build_command, docker_command
from helpers.server import TritonServer
from tests.copyable import fenced_blocks, run_copyable, tagged_cells
from tests.reliability_models import add_model, success_count, yolo11n_files

NOTEBOOK = REPO_ROOT / "notebooks" / "04_perf_analyzer_comparisons.ipynb"
MODEL = "yolo11n_onnx"


def parameters() -> dict:
    """The notebook's parameters cell, executed."""
    values: dict = {}
    exec("\n".join(tagged_cells(NOTEBOOK, "parameters")), values)  # noqa: S102 - our notebook
    return values


def perf_analyzer_lines(model: str, levels: list[int], p: dict, sdk: bool = False) -> str:
    """What the notebook must show: one perf_analyzer call per level, as measure_sweep runs it."""
    shape = {t.name: list(t.dims) for t in read_config(MODEL_REPOSITORY / model).input}
    prefix = docker_command(results_dir=Path("/tmp/perf_analyzer")) if sdk else ("perf_analyzer",)
    return "\n\n".join(
        format_command(
            build_command(
                model,
                url="localhost:8001",
                protocol=p["PROTOCOL"],
                concurrency=level,
                shape=shape,
                measurement_interval_ms=int(p["WINDOW_S"] * 1000),
                extra=["--max-trials", str(p["MAX_WINDOWS"])],
                csv_path=f"/tmp/perf_analyzer/{model}_c{level}.csv",
                prefix=prefix,
            )
        )
        for level in levels
    )


def test_perf_analyzer_lines_are_the_builders_output() -> None:
    p = parameters()
    blocks = fenced_blocks(NOTEBOOK)
    sweep = perf_analyzer_lines(p["MODELS"][0], p["CONCURRENCY_LEVELS"], p)
    sweep_sdk = perf_analyzer_lines(p["MODELS"][0], p["CONCURRENCY_LEVELS"], p, sdk=True)
    models = "\n\n".join(perf_analyzer_lines(m, [p["CONCURRENCY"]], p) for m in p["MODELS"])
    models_sdk = "\n\n".join(
        perf_analyzer_lines(m, [p["CONCURRENCY"]], p, sdk=True) for m in p["MODELS"]
    )
    for expected in (sweep, sweep_sdk, models, models_sdk):
        assert expected in blocks
    assert sweep.count("perf_analyzer \\\n") == len(p["CONCURRENCY_LEVELS"])
    assert "-u localhost:8001" in sweep and "-i grpc" in sweep
    assert "--net=host" in sweep_sdk and "tritonserver:24.10-py3-sdk" in sweep_sdk
    assert "--shape=INPUT__0:3,640,640" in models  # TorchScript's input name, read from its config


def test_configs_start_without_a_queue_delay_and_the_notebook_measures_it() -> None:
    p = parameters()
    for model in (
        "yolo11n_onnx",
        "yolo11n_onnx_ortopt",
        "yolo11n_onnx_int8",
        "yolo11n_torchscript",
    ):
        config = read_config(MODEL_REPOSITORY / model)
        assert config.HasField("dynamic_batching"), model
        assert config.dynamic_batching.max_queue_delay_microseconds == 0, model
    assert 0 in p["QUEUE_DELAYS_US"] and max(p["QUEUE_DELAYS_US"]) > 0
    assert p["INSTANCE_COUNTS"] == [1, 2]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repository = tmp_path_factory.mktemp("repository_04")
    add_model(repository, MODEL, MODEL, yolo11n_files(tmp_path_factory)["onnx"])
    with TritonServer(repository, models=[MODEL]) as running:
        yield running


def test_the_closed_loop_by_hand_counts_every_request(server, tmp_path) -> None:
    before = success_count(server, MODEL)
    result = run_copyable(
        NOTEBOOK,
        tmp_path,
        provided={
            "TRITON_GRPC_URL": server.grpc_url,
            "WINDOW_S": 1.0,
            "CONCURRENCY_LEVELS": [1, 2],
        },
        names=["plain"],
    )
    plain = result["values"]["plain"]
    assert [row["concurrency"] for row in plain] == [1, 2]
    assert success_count(server, MODEL) - before == sum(row["requests"] for row in plain)
    for row in plain:
        assert row["requests"] >= row["concurrency"]  # every client got at least one answer
        assert row["throughput_infer_per_s"] > 0
        assert 0 < row["latency_p50_ms"] <= row["latency_p99_ms"]
    assert result["shown"][-1] == plain
