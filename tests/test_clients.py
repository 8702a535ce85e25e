"""helpers.clients against a real embedded Triton serving tiny models.

Notebook 03's YOLO client (``detect`` and friends, helpers.lessons.yolo_client) is checked
against a served YOLO11n by tests/test_lessons_03.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from helpers.clients import (
    client_for,
    detections_equal,
    infer,
    infer_concurrently,
    loaded_config,
    model_io,
    protocol_of,
)
from helpers.model_config import config_to_dict
from helpers.server import TritonServer
from tests.tiny_models import sample_batch, tiny_net

#: Served vs in-process: same runtime, same inputs; only float summation order may differ.
ATOL = 1e-5


@pytest.fixture(scope="module")
def server(tiny_repository: Path):
    with TritonServer(tiny_repository, models=["tiny_onnx", "tiny_torchscript"]) as running:
        yield running


@pytest.fixture(scope="module")
def expected(tiny_repository: Path):
    session = ort.InferenceSession(str(tiny_repository / "tiny_onnx/1/model.onnx"))
    return lambda batch: session.run(None, {"images": batch})[0]


# ----------------------------------------------------------------------------- sync
@pytest.mark.parametrize("how", ["server", "url", "client"])
def test_http_and_grpc_equal_in_process_for_any_target(server, expected, how):
    batch = sample_batch(3, seed=1)
    for protocol in ("http", "grpc"):
        target = {
            "server": server,
            "url": server.http_url if protocol == "http" else server.grpc_url,
            "client": client_for(server, protocol),
        }[how]
        outputs = infer(target, "tiny_onnx", {"images": batch}, protocol=protocol)
        assert list(outputs) == ["scores"]
        np.testing.assert_allclose(outputs["scores"], expected(batch), atol=ATOL)


def test_torchscript_by_position_names(server):
    batch = sample_batch(2, seed=2)
    with torch.no_grad():
        reference = tiny_net()(torch.from_numpy(batch)).numpy()
    outputs = infer(server, "tiny_torchscript", {"INPUT__0": batch})
    np.testing.assert_allclose(outputs["OUTPUT__0"], reference, atol=ATOL)


def test_non_contiguous_input_is_sent_correctly(server, expected):
    batch = sample_batch(1, seed=3, size=32)[:, :, ::2, ::2]  # a strided view
    assert not batch.flags["C_CONTIGUOUS"]
    served = infer(server, "tiny_onnx", {"images": batch}, protocol="http")["scores"]
    np.testing.assert_allclose(served, expected(np.ascontiguousarray(batch)), atol=ATOL)


def test_protocol_of_rejects_other_objects(server):
    assert protocol_of(server.http_client()) == "http"
    assert protocol_of(server.grpc_client()) == "grpc"
    with pytest.raises(TypeError, match="not a tritonclient client"):
        protocol_of(object())


# ----------------------------------------------------------------------------- concurrent
def test_concurrent_requests_come_back_in_order(server, expected):
    batches = [sample_batch(1, seed=10 + i) for i in range(12)]
    answers = infer_concurrently(server, "tiny_onnx", [{"images": b} for b in batches], 6, "http")
    for batch, answer in zip(batches, answers):
        np.testing.assert_allclose(answer["scores"], expected(batch), atol=ATOL)


# ----------------------------------------------------------------------------- metadata, config
def test_metadata_and_config_agree_across_protocols(server):
    http, grpc = server.http_client(), server.grpc_client()
    assert model_io(http, "tiny_onnx") == model_io(grpc, "tiny_onnx") == (["images"], ["scores"])
    assert model_io(grpc, "tiny_torchscript") == (["INPUT__0"], ["OUTPUT__0"])
    assert loaded_config(http, "tiny_onnx") == loaded_config(grpc, "tiny_onnx")
    values = config_to_dict(loaded_config(http, "tiny_onnx"))
    assert values["backend"] == "onnxruntime"  # filled in by Triton from the platform
    assert values["dynamic_batching"]["max_queue_delay_microseconds"] == "50000"


# ----------------------------------------------------------------------------- detections
def _detection(x: float, score: float = 0.9, class_id: int = 0) -> dict:
    return {
        "label": "person",
        "class_id": class_id,
        "score": score,
        "box": [x, 10.0, x + 50.0, 80.0],
    }


def test_detections_equal_needs_same_count_class_and_close_boxes():
    ours = [_detection(10.0), _detection(200.0, 0.5, 2)]
    assert detections_equal(ours, [_detection(10.001), _detection(200.0, 0.5, 2)])
    assert not detections_equal(ours, ours[:1])
    assert not detections_equal(ours, [_detection(10.0), _detection(200.0, 0.5, 3)])
    assert not detections_equal(ours, [_detection(10.5), ours[1]])
    assert detections_equal(ours, [_detection(10.5), ours[1]], atol=1.0)
    assert detections_equal([], [])


def test_a_lost_connection_waits_for_the_dying_server_and_names_it():
    """A killed server closes its sockets before it has exited: the error waits to say so."""
    import subprocess
    import sys
    import time

    from geventhttpclient.response import HTTPConnectionClosed
    from tritonclient.utils import InferenceServerException

    from helpers import clients
    from helpers.server import ServerError

    assert clients.lost_connection(ConnectionResetError("reset"))
    assert clients.lost_connection(HTTPConnectionClosed("connection closed."))
    assert clients.lost_connection(InferenceServerException("x", status="StatusCode.UNAVAILABLE"))
    assert not clients.lost_connection(
        InferenceServerException("bad input", status="StatusCode.INVALID_ARGUMENT")
    )

    class Exiting:
        """A server whose process exits 0.3 s after its request failed."""

        def __init__(self) -> None:
            self.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"])

        def is_running(self) -> bool:
            return self.process.poll() is None

        def _check_alive(self) -> None:
            raise ServerError(f"no longer running (exit code {self.process.returncode})")

    server = Exiting()
    with pytest.raises(ServerError, match=r"no longer running \(exit code 0\)"):
        clients.raise_if_server_died(server, ConnectionResetError("reset"))
    alive = Exiting()
    start = time.perf_counter()
    clients.raise_if_server_died(alive, InferenceServerException("bad input"))  # no wait, no raise
    assert time.perf_counter() - start < 0.2 and alive.is_running()
    alive.process.wait()
