"""Notebook 08's copyable cells (send bytes, get boxes) where ``helpers`` cannot be imported.

Against a real embedded Triton with the committed pipeline models and a response cache; the
names the notebook's plumbing defines (server URLs, the image file) are provided by the test.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from helpers.paths import MODEL_REPOSITORY, REPO_ROOT
from helpers.server import TritonServer
from helpers.yolo import sample_image_path
from tests.copyable import fenced_blocks, run_copyable
from tests.reliability_models import pipeline_repository

NOTEBOOK = REPO_ROOT / "notebooks" / "08_server_side_pipelines.ipynb"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    repository = pipeline_repository(tmp_path_factory)
    with TritonServer(
        repository, models=["yolo11n_pipeline", "yolo11n_bls"], cache_size=32 << 20
    ) as running:
        yield running


def test_copyable_cells_send_bytes_and_get_boxes(server, tmp_path: Path):
    result = run_copyable(
        NOTEBOOK,
        tmp_path,
        provided={
            "TRITON_HTTP_URL": server.http_url,
            "TRITON_GRPC_URL": server.grpc_url,
            "TRITON_METRICS_URL": server.metrics_url,
            "IMAGE_FILE": str(sample_image_path("bus.jpg")),
            "CONF": 0.001,  # random weights offline: every score is below 0.02
        },
        names=["boxes", "labels", "grpc_boxes", "bls_boxes", "latency_ms", "before", "after"],
    )
    values = result["values"]
    boxes = np.array(values["boxes"])
    assert boxes.ndim == 2 and boxes.shape[1] == 6 and len(boxes) > 0
    assert len(values["labels"]) == len(boxes)
    assert (boxes[:, 4] >= 0.001).all() and (np.diff(boxes[:, 4]) <= 0).all()  # best first
    assert np.array_equal(np.array(values["grpc_boxes"]), boxes)
    assert np.allclose(np.array(values["bls_boxes"]), boxes, atol=1e-3)
    bls = result["shown"][-2]  # the BLS cell's summary
    assert bls["boxes for a 30x20 image"] == 0 and bls["same as the ensemble"] is True
    change = {k: values["after"][k] - values["before"].get(k, 0.0) for k in values["after"]}
    assert change == {"nv_cache_num_hits_per_model": 1.0, "nv_cache_num_misses_per_model": 1.0}
    assert values["latency_ms"]["second (hit)"] < values["latency_ms"]["first (miss)"]


def test_the_bls_code_shown_is_the_model_file():
    """The ```python blocks of notebook 08 are model_repository/yolo11n_bls/1/model.py's functions."""
    model = ast.parse((MODEL_REPOSITORY / "yolo11n_bls" / "1" / "model.py").read_text())
    in_file = {
        node.name: ast.dump(node)
        for node in ast.walk(model)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    }
    shown = [
        node
        for block in fenced_blocks(NOTEBOOK, "python")
        for node in ast.walk(ast.parse(block))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    ]
    assert {node.name for node in shown} >= {"call", "execute", "_respond", "_pipeline"}
    for node in shown:
        assert ast.dump(node) == in_file.get(node.name), (
            f"notebook 08 shows {node.name}() unlike model_repository/yolo11n_bls/1/model.py"
        )
    source = "".join(fenced_blocks(NOTEBOOK, "python"))
    assert "pb_utils.InferenceRequest(" in source and "async_exec()" in source
