"""A notebook pointed at the learner's own Triton (``TRITON_URL``) loads what it needs and leaves
that server running as it was: ``helpers.own_server``, against a real embedded server that
stands in for the learner's."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient

from helpers.model_config import config_variant
from helpers.own_server import OwnTriton, triton_server
from helpers.processes import free_ports
from helpers.server import Ports, ServerUnavailable, TritonServer


def consecutive_free_ports() -> Ports:
    """Three free ports in a row, as a learner's Triton has them (8000, 8001, 8002)."""
    for _ in range(50):
        (base,) = free_ports(1)
        try:
            with socket.socket() as one, socket.socket() as two:
                one.bind(("127.0.0.1", base + 1))
                two.bind(("127.0.0.1", base + 2))
        except OSError:
            continue
        return Ports(base, base + 1, base + 2)
    raise RuntimeError("no three free ports in a row")


@pytest.fixture(scope="module")
def learners(tiny_repository: Path):
    ports = consecutive_free_ports()
    with TritonServer(tiny_repository, models=["tiny_onnx"], ports=ports) as running:
        yield running


def ready(server: TritonServer) -> set[str]:
    return {m["name"] for m in server.repository_index() if m.get("state") == "READY"}


def test_own_server_loads_what_the_notebook_needs_and_leaves_the_server_as_it_was(
    learners, tiny_repository
):
    pid = learners.pid
    own = triton_server(
        learners.http_url, model_repository=tiny_repository, models=["tiny_torchscript"]
    )
    assert isinstance(own, OwnTriton)
    with own:
        assert own.mode == "yours" and own.pid is None and own.log_tail() == ""
        assert (own.http_url, own.grpc_url) == (learners.http_url, learners.grpc_url)
        assert {"tiny_onnx", "tiny_torchscript"} <= ready(learners)
        smaller = config_variant(tiny_repository / "tiny_onnx", max_batch_size=4)
        own.load_model("tiny_onnx", config=smaller)
        with own.http_client() as client:
            assert client.get_model_config("tiny_onnx")["max_batch_size"] == 4
            tensor = httpclient.InferInput("INPUT__0", [1, 3, 16, 16], "FP32")
            tensor.set_data_from_numpy(np.ones((1, 3, 16, 16), np.float32))
            scores = client.infer("tiny_torchscript", [tensor]).as_numpy("OUTPUT__0")
        assert scores.shape == (1, 4) and np.isfinite(scores).all()
    assert learners.is_running() and learners.pid == pid  # never stopped
    assert ready(learners) == {"tiny_onnx"}  # what the notebook loaded is gone
    with learners.http_client() as client:  # what it changed is back as on disk
        assert client.get_model_config("tiny_onnx")["max_batch_size"] == 8


def test_own_server_that_does_not_answer_says_how_to_start_one(tiny_repository):
    with pytest.raises(ServerUnavailable, match="TRITON_URL = None"):
        OwnTriton(model_repository=tiny_repository, url="127.0.0.1:9").start()
    with pytest.raises(ValueError, match="host:port"):
        OwnTriton(url="http://localhost").start()


def test_without_an_address_the_notebook_starts_its_own(tiny_repository):
    server = triton_server(None, model_repository=tiny_repository)
    assert type(server) is TritonServer and not server.is_running()
