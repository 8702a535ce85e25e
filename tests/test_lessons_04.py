"""Notebook 04's copyable cells, run as a learner's own client against a real Triton server.

The cells tagged ``copyable`` run in a fresh Python process where ``helpers`` cannot be
imported, against an embedded Triton serving YOLO11n (ONNX and TorchScript) from a temporary
repository, with the request the notebook's plumbing prepares (``bus.jpg`` letterboxed by
notebook 03's ``preprocess``, and the in-process output) passed in as arrays; the test then
checks the config override and its undoing, versions, unloading, the metrics page and the
status codes and messages Triton gives for bad requests.
"""

from __future__ import annotations

import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient

from helpers import yolo
from helpers.lessons.yolo_client import preprocess
from helpers.paths import REPO_ROOT
from helpers.server import TritonServer
from tests.copyable import run_copyable, tagged_cells
from tests.reliability_models import add_model, yolo11n_files

NOTEBOOK = REPO_ROOT / "notebooks" / "04_batching_versions_metrics.ipynb"
ONNX_MODEL, TORCHSCRIPT_MODEL = "yolo11n_onnx", "yolo11n_torchscript"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, no_leftover_server_processes):
    files = yolo11n_files(tmp_path_factory)
    repository = tmp_path_factory.mktemp("lessons04_repository")
    add_model(repository, ONNX_MODEL, ONNX_MODEL, files["onnx"])
    add_model(repository, TORCHSCRIPT_MODEL, TORCHSCRIPT_MODEL, files["torchscript"])
    with TritonServer(repository) as running:  # explicit mode: the cells load the models
        yield running, files


@pytest.fixture(scope="module")
def lesson(server, tmp_path_factory: pytest.TempPathFactory) -> dict:
    running, files = server
    batch, _ = preprocess(yolo.load_image(yolo.sample_image_path("bus.jpg")))
    session = ort.InferenceSession(str(files["onnx"]), providers=["CPUExecutionProvider"])
    provided = {
        "TRITON_HTTP_URL": running.http_url,
        "TRITON_GRPC_URL": running.grpc_url,
        "TRITON_METRICS_URL": running.metrics_url,
        "ONNX_FILE": str(files["onnx"]),
        "batch": batch,
        "in_process": session.run(["output0"], {"images": batch})[0],
    }
    names = [
        "loaded", "served_config", "batching_after_override", "batching_after_restore",
        "counted", "versions_served", "answered_by", "versions_after_reload",
        "ready_after_unload", "success_lines", "errors",
    ]  # fmt: skip
    return run_copyable(NOTEBOOK, tmp_path_factory.mktemp("lessons04"), provided, names)


def test_the_parameters_cell_names_the_models_the_tests_serve():
    (parameters,) = tagged_cells(NOTEBOOK, "parameters")
    values = {}
    exec(parameters, values)  # noqa: S102 - the notebook's parameters cell
    assert (values["ONNX_MODEL"], values["TORCHSCRIPT_MODEL"]) == (ONNX_MODEL, TORCHSCRIPT_MODEL)
    assert values["TRITON_URL"] is None


def test_the_models_load_with_the_committed_batching(lesson):
    values = lesson["values"]
    assert values["loaded"] == {ONNX_MODEL: True, TORCHSCRIPT_MODEL: True}
    assert values["served_config"]["dynamic_batching"]["preferred_batch_size"] == [8]


def test_config_overrides_versions_and_unloading(lesson):
    values = lesson["values"]
    assert values["batching_after_override"] is False
    # back to the committed config: dynamic_batching { } (no queue delay, Triton's starting point)
    restored = values["batching_after_restore"]
    assert restored is not False and int(restored.get("max_queue_delay_microseconds", 0)) == 0
    # the reload restarts the counters: nothing was sent to the restored model yet
    assert values["counted"] == {"requests": 0, "executions": 0, "executions by batch size": {}}
    assert values["versions_served"] == ["1", "2"]
    assert values["answered_by"] == {
        "1": {"version": "1", "same": True},
        "2": {"version": "2", "same": True},
        "(none)": {"version": "2", "same": True},
    }
    assert values["versions_after_reload"] == ["1"]
    assert values["ready_after_unload"] == {TORCHSCRIPT_MODEL: False, ONNX_MODEL: True}


def test_metrics_page_counts_the_requests_the_cells_sent(lesson):
    lines = [line for line in lesson["values"]["success_lines"] if not line.startswith("#")]
    counts = {
        line.split('version="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in lines
        if f'model="{ONNX_MODEL}"' in line
    }
    # version 1 answered one request (the versions cell): its counters ran on across the
    # reloads in between, unlike the statistics API. Version 2 answered two; its line goes
    # away once that version has finished unloading, which may not have happened yet.
    assert counts.pop("1") == 1.0
    assert counts in ({}, {"2": 2.0})


def test_errors_are_caught_with_their_status_and_message(lesson, server):
    running, _ = server
    errors = {case: tuple(answer) for case, answer in lesson["values"]["errors"].items()}
    assert errors["correct request"] == ("200", "")
    expected = {
        "wrong input name": ("400", "unexpected inference input 'image'"),
        "wrong shape": ("400", "unexpected shape for input 'images'"),
        "wrong data type": ("400", "data-type is 'FP16'"),
        "batch of 9": ("400", "batch-size must be <= 8"),
        "unknown model": ("404", "'yolo11_onnx' is not found"),
        "model not loaded": ("404", f"'{TORCHSCRIPT_MODEL}' has no available versions"),
    }
    for case, (status, words) in expected.items():
        assert errors[case][0] == status and words in errors[case][1], (case, errors[case])
    client = grpcclient.InferenceServerClient(running.grpc_url)
    try:
        assert client.is_server_live() and client.is_model_ready(ONNX_MODEL)
    finally:
        client.close()
