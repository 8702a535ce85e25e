"""A notebook pointed at the learner's own Triton (``TRITON_URL``) loads what it needs and leaves
that server running as it was: ``helpers.own_server``, against a real embedded server that
stands in for the learner's."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import numpy as np
import psutil
import pytest
import tritonclient.http as httpclient

from helpers.export import export_onnx, export_torchscript
from helpers.model_config import config_variant
from helpers.own_server import OwnTriton, use_triton
from helpers.paths import MODEL_REPOSITORY, REPO_ROOT
from helpers.processes import free_ports, is_alive, is_server_process, process_tree, wait_until_gone
from helpers.server import Ports, ServerUnavailable, TritonServer
from helpers.yolo import load_yolo
from tests.reliability_models import NOTEBOOK_01_FILES


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
    own = use_triton(
        learners.http_url, model_repository=tiny_repository, models=["tiny_torchscript"]
    )
    assert isinstance(own, OwnTriton)
    with own:
        assert own.mode == "yours" and own.pid is None and own.log_tail() == ""
        assert (own.http_url, own.grpc_url) == (learners.http_url, learners.grpc_url)
        assert {"tiny_onnx", "tiny_torchscript"} <= ready(learners)
        assert own.served_by("tiny_onnx").startswith("the course's Python stand-in for onnxruntime")
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
    server = use_triton(None, model_repository=tiny_repository)
    assert type(server) is TritonServer and not server.is_running()


#: The notebooks that talk to one server, run as a learner with their own Triton would.
LEARNER_NOTEBOOKS = ["03", "04", "05", "07", "08", "09"]
#: Shorter measurements than a learner's, through the notebooks' own parameters.
SHORT_RUN = ["WARMUP_S=0.5", "WINDOW_S=1.0", "MAX_WINDOWS=1", "LOOP_SECONDS=1.0", "RUNTIME_SECONDS=1.0"]


def server_processes() -> set[int]:
    return {p.pid for p in psutil.process_iter() if is_alive(p.pid) and is_server_process(p)}


def test_own_server_the_notebooks_run_against_the_learners_triton_and_leave_it_serving():
    """The learner starts tritonserver with the flags of the course's docker command (the
    wheel's binary standing in for the container) plus the cache and rate limiter that notebooks
    08 and 09 use, then runs `make run TRITON_URL=...`: every notebook passes, none of them
    starts a server of its own or leaves one behind, and the learner's server still serves
    exactly the models it had."""
    if not all(path.is_file() for path in NOTEBOOK_01_FILES.values()):
        loaded = load_yolo("n")  # as notebook 01 does before the learner reaches 03
        export_onnx(loaded)
        export_torchscript(loaded)
    ports = consecutive_free_ports()
    learners = TritonServer(
        MODEL_REPOSITORY,
        ports=ports,
        cache_size=64 * 1024 * 1024,
        rate_limit=True,
        rate_limit_resources=[f"cpu_cores:{os.cpu_count()}"],
    )
    with learners:
        pid, loaded = learners.pid, ready(learners)
        theirs = set(process_tree(pid))
        before = server_processes() - theirs
        done = subprocess.run(  # noqa: S603 - an argument list
            [
                "make",
                "run",
                f"NOTEBOOKS={' '.join(LEARNER_NOTEBOOKS)}",
                f"TRITON_URL={learners.http_url}",
                *SHORT_RUN,
            ],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=1500,
            check=False,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        for number in LEARNER_NOTEBOOKS:
            assert f"{number}_" in done.stdout + done.stderr
        assert learners.is_running() and learners.pid == pid
        assert ready(learners) == loaded  # what the notebooks loaded is unloaded again
        started = server_processes() - before - set(process_tree(pid))
        assert wait_until_gone(started, 30) == []
        learners.load_model("yolo11n_onnx")
        with learners.http_client() as client:
            tensor = httpclient.InferInput("images", [1, 3, 640, 640], "FP32")
            tensor.set_data_from_numpy(np.zeros((1, 3, 640, 640), np.float32))
            assert client.infer("yolo11n_onnx", [tensor]).as_numpy("output0").shape == (1, 84, 8400)
