"""Notebook 03's copyable cells, run as a learner's own client against a real Triton server.

The cells tagged ``copyable`` run in a fresh Python process where ``helpers`` cannot be
imported, against an embedded Triton serving YOLO11n (ONNX and TorchScript) from a temporary
repository; the test then checks what they computed: the same input tensor as notebook 01's
letterbox cell, the same outputs and detections as ONNX Runtime in-process, and the boxes of
notebook 01's ``decode``.
The cells' ``preprocess`` / ``postprocess`` / ``detect`` are the generated
``helpers.lessons.yolo_client`` (tests/test_export_cells.py keeps them equal).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc.aio as grpcaio

from helpers import yolo
from helpers.clients import detections_equal
from helpers.lessons.yolo_client import postprocess, preprocess
from helpers.lessons.yolo_decode import decode, plant_boxes
from helpers.paths import REPO_ROOT
from helpers.server import TritonServer
from tests.copyable import cell_function, run_copyable, tagged_cells
from tests.reliability_models import add_model, yolo11n_files

NOTEBOOK = REPO_ROOT / "notebooks" / "03_triton_serving.ipynb"
NOTEBOOK_01 = REPO_ROOT / "notebooks" / "01_onnx_export_and_inspection.ipynb"
ONNX_MODEL, TORCHSCRIPT_MODEL = "yolo11n_onnx", "yolo11n_torchscript"
#: The parameters the cells take from the notebook's parameters cell.
PARAMETERS = {"IMAGE_SIZE": 640, "CONF_THRESHOLD": 0.25, "IOU_THRESHOLD": 0.7}


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return yolo11n_files(tmp_path_factory)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, model_files, no_leftover_server_processes):
    repository = tmp_path_factory.mktemp("lessons03_repository")
    add_model(repository, ONNX_MODEL, ONNX_MODEL, model_files["onnx"])
    add_model(repository, TORCHSCRIPT_MODEL, TORCHSCRIPT_MODEL, model_files["torchscript"])
    with TritonServer(repository) as running:  # explicit mode: the cells load the models
        yield running


@pytest.fixture(scope="module")
def lesson(server, model_files, tmp_path_factory: pytest.TempPathFactory) -> dict:
    provided = {
        "TRITON_HTTP_URL": server.http_url,
        "TRITON_GRPC_URL": server.grpc_url,
        "TRITON_METRICS_URL": server.metrics_url,
        "IMAGE_PATH": str(yolo.sample_image_path("bus.jpg")),
        "ONNX_FILE": str(model_files["onnx"]),
    }
    names = [
        "health", "loaded", "tensors", "served_config", "request_bytes", "output_diff",
        "reference", "detections",
    ]  # fmt: skip
    return run_copyable(NOTEBOOK, tmp_path_factory.mktemp("lessons03"), provided, names)


@pytest.fixture(scope="module")
def bus():
    image = yolo.load_image(yolo.sample_image_path("bus.jpg"))
    batch, letterbox = preprocess(image)
    return image, batch, letterbox


@pytest.fixture(scope="module")
def in_process(model_files, bus) -> np.ndarray:
    session = ort.InferenceSession(str(model_files["onnx"]), providers=["CPUExecutionProvider"])
    return session.run(["output0"], {"images": bus[1]})[0]


def cell_functions(*names: str, **extra) -> dict:
    """The notebook's copyable functions ``names``, defined here with the parameters and ``extra``."""
    namespace = {"cv2": cv2, "np": np, **PARAMETERS, **extra}
    for name in names:
        exec(cell_function(NOTEBOOK, name), namespace)  # noqa: S102 - the notebook's own cell
    return namespace


def test_the_parameters_cell_holds_what_the_cells_read():
    (parameters,) = tagged_cells(NOTEBOOK, "parameters")
    values = {}
    exec(parameters, values)  # noqa: S102 - the notebook's parameters cell
    assert {k: values[k] for k in PARAMETERS} == PARAMETERS
    assert (values["ONNX_MODEL"], values["TORCHSCRIPT_MODEL"]) == (ONNX_MODEL, TORCHSCRIPT_MODEL)


def test_health_load_metadata_and_config(lesson):
    values = lesson["values"]
    assert all(v is True for k, v in values["health"].items() if k != "Triton version")
    assert values["health"]["Triton version"].count(".") == 2
    assert {name: entry["ready"] for name, entry in values["loaded"].items()} == {
        ONNX_MODEL: True,
        TORCHSCRIPT_MODEL: True,
    }
    assert [ONNX_MODEL, "inputs", "images", "FP32", [-1, 3, 640, 640]] in values["tensors"]
    assert [TORCHSCRIPT_MODEL, "inputs", "INPUT__0", "FP32", [-1, 3, 640, 640]] in values["tensors"]
    config = values["served_config"]
    assert config["max_batch_size"] == 8 and config["dynamic_batching"]["preferred_batch_size"] == [
        8
    ]


def test_preprocess_is_notebook_01s_letterbox_cell_bit_for_bit(bus, tmp_path):
    (cell,) = [c for c in tagged_cells(NOTEBOOK_01) if "copyMakeBorder" in c]
    image, expected, letterbox = bus
    wide = cv2.resize(image, (1000, 333))  # padding split unevenly, on the other axis
    cv2.imwrite(str(tmp_path / "wide.png"), wide)
    for picture, path in ((image, yolo.sample_image_path("bus.jpg")), (wide, tmp_path / "wide.png")):
        namespace = {"IMAGE_PATH": str(path)}
        exec(cell, namespace)  # noqa: S102 - notebook 01's own cell
        batch, _ = preprocess(picture)
        assert batch.dtype == np.float32 and np.array_equal(batch, namespace["blob"])
    assert letterbox == {"gain": (480 / 810, 640 / 1080), "pad": (80, 0), "shape": (1080, 810)}
    assert np.array_equal(expected, preprocess(image)[0])


def test_served_outputs_equal_in_process_and_json_costs_more(lesson):
    values = lesson["values"]
    assert set(values["output_diff"]) == {"HTTP", "gRPC"}
    assert max(values["output_diff"].values()) < 1e-4
    sizes = values["request_bytes"]
    assert sizes["binary"] > 4 * 3 * 640 * 640 and sizes["JSON"] > 2 * sizes["binary"]


def test_detections_equal_the_course_postprocess_of_the_in_process_output(lesson, bus, in_process):
    _, _, letterbox = bus
    expected = postprocess(in_process[0], letterbox, yolo.coco_names())
    values = lesson["values"]
    assert detections_equal(values["reference"], expected)
    found = values["detections"]
    assert set(found) == {"ONNX over HTTP", "ONNX over gRPC", "TorchScript over gRPC"}
    assert detections_equal(found["ONNX over HTTP"], expected)
    assert detections_equal(found["ONNX over gRPC"], expected)
    assert detections_equal(found["TorchScript over gRPC"], expected, atol=1.0)


def test_postprocess_keeps_exactly_the_planted_boxes_like_notebook_01s_decode(bus):
    """With random weights bus.jpg may give no box at all: planted boxes make the check real."""
    _, _, letterbox = bus
    boxes = [[100, 120, 300, 500], [320, 200, 420, 330], [110, 130, 290, 480]]
    output = plant_boxes(boxes, class_ids=[0, 5, 2], scores=[0.9, 0.6, 0.8], seed=3)
    found = postprocess(output[0], letterbox, yolo.coco_names())
    assert [d["label"] for d in found] == ["person", "car", "bus"]
    decoded, scores, class_ids = decode(output)  # notebook 01: network-input pixels
    assert [d["class_id"] for d in found] == class_ids.tolist()
    np.testing.assert_allclose([d["score"] for d in found], scores, atol=1e-6)
    (gain_x, gain_y), (pad_x, pad_y) = letterbox["gain"], letterbox["pad"]
    mapped = (decoded - [pad_x, pad_y, pad_x, pad_y]) / [gain_x, gain_y, gain_x, gain_y]
    np.testing.assert_allclose([d["box"] for d in found], mapped, atol=1e-3)


def test_async_client_answers_every_request_like_in_process(lesson, server, bus, in_process):
    functions = cell_functions(
        "infer_all", asyncio=asyncio, grpcaio=grpcaio, TRITON_GRPC_URL=server.grpc_url
    )
    image, batch, _ = bus
    mirrored, _ = preprocess(image[:, ::-1])
    answers = asyncio.run(functions["infer_all"](ONNX_MODEL, [batch, mirrored, batch]))
    assert len(answers) == 3
    np.testing.assert_allclose(answers[0], in_process, atol=1e-4)
    np.testing.assert_allclose(answers[2], in_process, atol=1e-4)
    assert not np.allclose(answers[1], in_process, atol=1e-4)  # its own answer, not a copy


def test_the_ngc_docker_run_line_is_the_one_the_server_manager_builds():
    from helpers.commands import format_command
    from helpers.server import Ports, docker_command
    from tests.copyable import fenced_blocks

    built = docker_command("$PWD/model_repository", Ports(8000, 8001, 8002), gpus=True)
    text = format_command(built)
    assert text in fenced_blocks(NOTEBOOK)
    assert '--volume "$PWD/model_repository:/models:ro"' in text
    assert "nvcr.io/nvidia/tritonserver:24.10-py3" in text and "--model-repository=/models" in text
