"""Notebook 05's lessons: a closed loop written by hand against a real server, the one
perf_analyzer command (and the NGC SDK image's prefix) shown as text equal to the builders' output,
and section 6's parser of perf_analyzer's console output, on the committed GPU reference run."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from helpers.commands import format_command
from helpers.model_config import read_config
from helpers.paths import MODEL_REPOSITORY, REPO_ROOT
from helpers.perf_analyzer import build_command, docker_command
from helpers.results import REFERENCE_DIR, dated_runs
from helpers.server import TritonServer
from tests.copyable import fenced_blocks, run_copyable, tagged_cells
from tests.reliability_models import add_model, success_count, yolo11n_files

NOTEBOOK = REPO_ROOT / "notebooks" / "05_perf_analyzer_comparisons.ipynb"
MODEL = "yolo11n_onnx"
SERVER_PARTS = ["overhead", "queue", "compute input", "compute infer", "compute output"]


def parameters() -> dict:
    """The notebook's parameters cell, executed."""
    values: dict = {}
    exec("\n".join(tagged_cells(NOTEBOOK, "parameters")), values)  # noqa: S102 - our notebook
    return values


def markdown_cells(notebook: Path) -> list[str]:
    """The notebook's markdown cells, as text."""
    cells = json.loads(notebook.read_text())["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "markdown"]


def perf_analyzer_call(model: str, level: int, p: dict, prefix=("perf_analyzer",)) -> list[str]:
    """One point's perf_analyzer call, as measure_sweep runs it, for a server on localhost:8001."""
    shape = {t.name: list(t.dims) for t in read_config(MODEL_REPOSITORY / model).input}
    return build_command(
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


def test_the_one_perf_analyzer_command_shown_is_the_builders_output() -> None:
    p = parameters()
    first = perf_analyzer_call(p["MODELS"][0], p["CONCURRENCY_LEVELS"][0], p)
    blocks = [block for block in fenced_blocks(NOTEBOOK) if "perf_analyzer" in block]
    assert blocks == [format_command(first)]  # one command, shown once
    assert "-u localhost:8001" in blocks[0] and "-i grpc" in blocks[0]
    # the NGC SDK image's prefix, inline, before the same options
    sdk = docker_command(results_dir=Path("/tmp/perf_analyzer"))
    assert sdk[-1] == "perf_analyzer"
    shown = "\n".join(cell for cell in markdown_cells(NOTEBOOK) if format_command(first) in cell)
    assert f"`{' '.join(sdk[:-1])}`" in shown.replace("\n", " ")
    assert "tritonserver:24.10-py3-sdk" in shown


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


def newest_console() -> Path:
    """The reference runs' newest console file, by the date that ends its name (as the notebook)."""
    return dated_runs("gpu", REFERENCE_DIR, suffix=".console.txt")[0]


def console_block(path: Path, point: str) -> str:
    """The text under ``### <point>`` in a console file, up to the next header."""
    text = path.read_text()
    header = f"### {point}\n"
    assert header in text, f"{path.name} has no block {point!r}"
    return text.split(header, 1)[1].split("\n### ", 1)[0]


def test_the_block_the_notebook_reads_is_in_the_newest_console_file() -> None:
    point = parameters()["CONSOLE_POINT"]
    path = newest_console()
    block = console_block(path, point)
    assert "Client:" in block and "Server:" in block and "Avg request latency" in block
    assert path.with_name(path.name.replace(".console.txt", ".csv")).exists()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repository = tmp_path_factory.mktemp("repository_04")
    add_model(repository, MODEL, MODEL, yolo11n_files(tmp_path_factory)["onnx"])
    with TritonServer(repository, models=[MODEL]) as running:
        yield running


@pytest.fixture(scope="module")
def copyable(server, tmp_path_factory) -> dict:
    """Every copyable cell, once: the closed loop against the server, the parser on the reference."""
    before = success_count(server, MODEL)
    result = run_copyable(
        NOTEBOOK,
        tmp_path_factory.mktemp("lessons04"),
        provided={
            "TRITON_GRPC_URL": server.grpc_url,
            "WINDOW_S": 1.0,
            "CONCURRENCY_LEVELS": [1, 2],
            "PERF_ANALYZER_CONSOLE": console_block(newest_console(), parameters()["CONSOLE_POINT"]),
        },
        names=["plain", "numbers", "parts_us", "average_batch"],
    )
    answered = sum(row["requests"] for row in result["values"]["plain"])
    return {"before": before, "after": success_count(server, MODEL, before + answered), **result}


def test_the_closed_loop_by_hand_counts_every_request(copyable) -> None:
    plain = copyable["values"]["plain"]
    assert [row["concurrency"] for row in plain] == [1, 2]
    assert copyable["after"] - copyable["before"] == sum(row["requests"] for row in plain)
    for row in plain:
        assert row["requests"] >= row["concurrency"]  # every client got at least one answer
        assert row["throughput_infer_per_s"] > 0
        assert 0 < row["latency_p50_ms"] <= row["latency_p99_ms"]
    assert plain in copyable["shown"]


def test_the_console_parser_reads_the_numbers_the_csv_has(copyable) -> None:
    point = parameters()["CONSOLE_POINT"]
    config, level = point.rsplit(", concurrency ", 1)
    path = newest_console()
    runs = pd.read_csv(path.with_name(path.name.replace(".console.txt", ".csv")))
    row = runs[
        (runs["config"] == config) & (runs["concurrency"] == int(level)) & (runs["repeat"] == 0)
    ].iloc[0]  # the console block is the point's first run
    numbers = copyable["values"]["numbers"]
    assert numbers["Request concurrency"] == int(level)
    assert numbers["Throughput"] == pytest.approx(row["throughput_infer_per_s"], abs=0.005)
    # the console prints microseconds, the CSV milliseconds
    for line, column in [
        ("p50 latency", "latency_p50_ms"),
        ("p99 latency", "latency_p99_ms"),
        ("queue", "server_queue_ms"),
        ("compute infer", "server_compute_infer_ms"),
    ]:
        assert numbers[line] == round(row[column] * 1000), line
    # the server's parts add up to its average request latency, each rounded to a microsecond
    total = sum(numbers[part] for part in SERVER_PARTS)
    assert abs(total - numbers["Avg request latency"]) <= len(SERVER_PARTS) / 2
    # the breakdown: the server's parts plus client and network make the client's average
    parts_us = copyable["values"]["parts_us"]
    assert [name.removeprefix("server: ") for name in parts_us][:5] == SERVER_PARTS
    # up to the same rounding: the console prints each server part to the microsecond
    assert abs(sum(parts_us.values()) - numbers["Avg latency"]) <= len(SERVER_PARTS) / 2
    assert copyable["values"]["average_batch"] == pytest.approx(
        numbers["Inference count"] / numbers["Execution count"]
    )
