"""Faults: the server killed mid-load, a Python stub process killed, a model file corrupted.

Each fault must be reported clearly (the helpers' errors carry the exit code and the server
log), must not take down more than it has to, and must be recoverable through the helpers:
``start()`` launches a new server after the old one died, ``reload_model`` gives a model
whose stub died new instances, and a repaired file loads again.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from tritonclient.utils import InferenceServerException

from helpers import speech
from helpers.clients import infer
from helpers.lessons.whisper import transcribe
from helpers.processes import is_alive, process_tree, wait_until_gone
from helpers.server import ModelLoadError, ServerError, TritonServer
from helpers.speech import load_samples
from tests.reliability_models import add_model, yolo11n_files
from tests.tiny_models import sample_batch

YOLO, WHISPER = "yolo11n_onnx", speech.MODEL_NAME
SPEECH = {sample.name: sample for sample in load_samples()}["thank_you"]


pytestmark = pytest.mark.usefixtures("no_leftover_server_processes")


# ----------------------------------------------------------------------------- server killed
def test_server_killed_mid_load_every_request_answers_or_raises_and_start_relaunches(
    tiny_repository: Path,
):
    """SIGKILL while 8 threads send 600 requests through helpers.clients (HTTP and gRPC)."""
    requests, concurrency, kill_after = 600, 8, 150
    inputs = [sample_batch(1, seed=i) for i in range(32)]
    session = ort.InferenceSession(str(tiny_repository / "tiny_onnx" / "1" / "model.onnx"))
    expected = [session.run(None, {"images": array})[0] for array in inputs]
    server = TritonServer(tiny_repository, models=["tiny_onnx"]).start()
    try:
        old_pid, stubs = server.pid, process_tree(server.pid)[1:]
        assert stubs
        answered, killed = threading.Semaphore(0), threading.Event()

        def send(index: int) -> np.ndarray | Exception:
            protocol = "grpc" if index % 2 else "http"
            try:
                images = {"images": inputs[index % 32]}
                output = infer(server, "tiny_onnx", images, protocol=protocol)["scores"]
            except Exception as error:  # every failure is kept and checked below
                return error
            answered.release()
            return output

        def kill_when_busy() -> None:
            for _ in range(kill_after):
                answered.acquire()
            os.kill(old_pid, signal.SIGKILL)
            killed.set()

        killer = threading.Thread(target=kill_when_busy, daemon=True)
        killer.start()
        with ThreadPoolExecutor(concurrency) as pool:
            results = list(pool.map(send, range(requests)))
        assert killed.is_set()

        assert len(results) == requests  # nothing dropped: each answered or raised
        answers = {i: r for i, r in enumerate(results) if isinstance(r, np.ndarray)}
        errors = [r for r in results if isinstance(r, Exception)]
        assert len(answers) + len(errors) == requests
        assert len(answers) >= kill_after and errors
        for index, output in answers.items():
            np.testing.assert_allclose(output, expected[index % 32], atol=1e-5)
        told = [e for e in errors if isinstance(e, ServerError)]
        # Requests in flight at the kill may see the bare connection error before the
        # process is gone; every request after that gets the helpers' error.
        assert len(errors) - len(told) <= concurrency, [str(e)[:80] for e in errors[:5]]
        for error in told:
            assert "tritonserver is no longer running (exit code -9)" in str(error)
            assert "--- tritonserver log" in str(error)
        # The stubs exit with their server (it is reaped at once, see TritonServer._launch).
        assert wait_until_gone(stubs, timeout=10) == []

        server.start()  # the next call launches a new server
        assert server.is_running() and server.pid != old_pid
        output = infer(server, "tiny_onnx", {"images": inputs[0]}, protocol="http")["scores"]
        np.testing.assert_allclose(output, expected[0], atol=1e-5)
    finally:
        server.stop()
    assert not is_alive(old_pid)


# ----------------------------------------------------------------------------- one server
@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("reliability_faults")
    add_model(root, YOLO, YOLO, yolo11n_files(tmp_path_factory)["onnx"])  # a copy: corrupted
    add_model(root, WHISPER, WHISPER)
    return root


@pytest.fixture(scope="module")
def server(repository: Path):
    with TritonServer(repository, models=[YOLO, WHISPER]) as running:
        yield running


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(3).random((1, 3, 640, 640), dtype=np.float32)


def stub_of(server: TritonServer, model: str) -> int:
    """The pid of the Python stub process running ``model``'s only instance."""
    import psutil

    stubs = [
        child.pid
        for child in psutil.Process(server.pid).children()
        if is_alive(child.pid) and f"/{model}/1/" in " ".join(child.cmdline())
    ]
    assert len(stubs) == 1, stubs
    return stubs[0]


def test_a_killed_stub_fails_its_own_requests_clearly_and_reload_brings_it_back(server, image):
    yolo_before = infer(server, YOLO, {"images": image}, protocol="http")["output0"]
    stub = stub_of(server, WHISPER)
    os.kill(stub, signal.SIGKILL)
    assert wait_until_gone([stub]) == []
    with server.http_client() as client:
        for _ in range(2):  # every request, not only the first
            with pytest.raises(InferenceServerException) as error:
                transcribe(client, SPEECH.read_bytes())
            assert f"Stub process '{WHISPER}_0_0' is not healthy" in error.value.message()
    # The server and its other model are untouched.
    assert server.is_running()
    np.testing.assert_array_equal(infer(server, YOLO, {"images": image})["output0"], yolo_before)

    started = time.monotonic()
    server.reload_model(WHISPER)
    assert time.monotonic() - started < 30  # no waiting for the dead instance to unload
    assert stub_of(server, WHISPER) != stub
    with server.http_client() as client:
        assert transcribe(client, SPEECH.read_bytes()).text == "Thank you for listening."


def test_a_model_file_corrupted_on_disk_fails_to_load_and_the_rest_keeps_serving(
    server, repository, image
):
    path = repository / YOLO / "1" / "model.onnx"
    original = path.read_bytes()
    served = infer(server, YOLO, {"images": image}, protocol="http")["output0"]
    session = ort.InferenceSession(str(path))
    np.testing.assert_allclose(served, session.run(None, {"images": image})[0], atol=1e-3)
    try:
        path.write_bytes(original[: len(original) // 2])  # a copy cut short
        with pytest.raises(ModelLoadError) as error:
            server.load_model(YOLO)
        message = str(error.value)
        assert f"model '{YOLO}' failed to load" in message
        assert f"Load model from {path} failed:Protobuf parsing failed" in message
        assert "--- tritonserver log" in message
        # Triton keeps the version that was loaded when a reload fails; Whisper is untouched.
        assert server.is_running() and server.model_ready(YOLO)
        np.testing.assert_array_equal(infer(server, YOLO, {"images": image})["output0"], served)
        with server.http_client() as client:
            assert transcribe(client, SPEECH.read_bytes()).text == "Thank you for listening."
    finally:
        path.write_bytes(original)
    server.load_model(YOLO)  # the repaired file loads again
    np.testing.assert_allclose(
        infer(server, YOLO, {"images": image}, protocol="http")["output0"], served, atol=1e-5
    )


def test_stop_kills_stubs_that_outlived_a_killed_server(tiny_repository: Path):
    """A stub left to init (its server SIGKILLed while it was stopped) is killed by stop()."""
    server = TritonServer(tiny_repository, models=["tiny_onnx"]).start()
    try:
        stubs = process_tree(server.pid)[1:]
        assert stubs
        for stub in stubs:
            os.kill(stub, signal.SIGSTOP)  # a stub that cannot notice its server is gone
        os.kill(server.pid, signal.SIGKILL)
        assert wait_until_gone([server.pid], timeout=10) == []
        assert all(is_alive(stub) for stub in stubs)  # orphans now
    finally:
        server.stop()
    assert wait_until_gone(stubs, timeout=10) == []
