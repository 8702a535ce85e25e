"""The FastAPI + PyTorch baseline of notebook 07, against a real uvicorn server."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import psutil
import pytest

from helpers.fastapi_server import FastAPIServer
from helpers.lessons.yolo_client import postprocess, preprocess
from helpers.loadgen import fastapi_target, measure
from helpers.yolo import (
    RandomWeightsWarning,
    coco_names,
    load_image,
    load_yolo,
    sample_image_path,
    torch_forward,
)

SHAPE = "1,3,640,640"


@pytest.fixture(scope="module")
def server():
    with FastAPIServer(torch_threads=1) as running:
        yield running


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """bus.jpg, zidane.jpg and their mirror images, preprocessed: [4, 3, 640, 640]."""
    pictures = [load_image(sample_image_path(n)) for n in ("bus.jpg", "zidane.jpg")]
    return np.concatenate([preprocess(p)[0] for p in pictures + [p[:, ::-1] for p in pictures]])


@pytest.fixture(scope="module")
def reference(images) -> np.ndarray:
    """The same network run in this process with torch: [4, 84, 8400]."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        loaded = load_yolo()
    return torch_forward(loaded, images)


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
    request = urllib.request.Request(url + "/predict", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120) as reply:
            return reply.status, reply.read(), dict(reply.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read(), dict(error.headers)


def predict(url: str, images: np.ndarray) -> np.ndarray:
    headers = {
        "Content-Type": "application/octet-stream",
        "X-Shape": ",".join(map(str, images.shape)),
    }
    status, body, reply_headers = post(url, np.ascontiguousarray(images).tobytes(), headers)
    assert status == 200, body[:300]
    shape = tuple(int(n) for n in reply_headers["x-shape"].split(","))
    return np.frombuffer(body, dtype=np.float32).reshape(shape)


def assert_same_output(served: np.ndarray, expected: np.ndarray) -> None:
    # The server folds BatchNorm into the convolutions (as Ultralytics' predict does), so
    # float rounding differs a little from the unfused network; boxes are in pixels.
    assert served.shape == expected.shape
    np.testing.assert_allclose(served[:, :4], expected[:, :4], atol=0.05)
    np.testing.assert_allclose(served[:, 4:], expected[:, 4:], atol=1e-3)


def test_output_equals_torch_in_process(server, images, reference):
    assert_same_output(predict(server.url, images[:1]), reference[:1])


def test_a_batch_in_one_request_equals_torch_in_process(server, images, reference):
    assert_same_output(predict(server.url, images), reference)


def test_info_reports_weights_and_pinned_threads(server):
    info = server.info()
    assert info["torch_threads"] == 1
    assert info["pretrained"] is False or "pretrained" in info["weights"]
    assert info["handler_threads"] >= 1


GOOD_BODY = np.zeros((1, 3, 640, 640), np.float32).tobytes()
OCTET = "application/octet-stream"


@pytest.mark.parametrize(
    ("body", "headers", "status", "message"),
    [
        (GOOD_BODY, {"Content-Type": "application/json", "X-Shape": SHAPE}, 415, "Content-Type"),
        (GOOD_BODY, {"Content-Type": OCTET}, 400, "missing header X-Shape"),
        (GOOD_BODY, {"Content-Type": OCTET, "X-Shape": "1x3x640x640"}, 400, "integers"),
        (GOOD_BODY, {"Content-Type": OCTET, "X-Shape": "1,3,320,320"}, 400, "N,3,640,640"),
        (GOOD_BODY * 9, {"Content-Type": OCTET, "X-Shape": "9,3,640,640"}, 400, "1 <= N <= 8"),
        (GOOD_BODY[:-4], {"Content-Type": OCTET, "X-Shape": SHAPE}, 400, "needs 4915200"),
        (b"", {"Content-Type": OCTET, "X-Shape": SHAPE}, 400, "body has 0 bytes"),
    ],
    ids=["json", "no-shape", "bad-shape", "wrong-size", "batch-too-big", "short-body", "empty"],
)
def test_bad_input_gets_a_clear_4xx_and_the_next_request_works(
    server, images, body, headers, status, message
):
    got, reply, _ = post(server.url, body, headers)
    assert got == status
    assert message in reply.decode()
    assert predict(server.url, images[:1]).shape == (1, 84, 8400)


def test_binds_to_loopback_only(server):
    listening = [
        c
        for c in psutil.Process(server.pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    ]
    assert [c.laddr.port for c in listening] == [server.port]
    assert ipaddress.ip_address(listening[0].laddr.ip).is_loopback


def test_harness_counts_requests_and_server_cpu(server, images):
    row = measure(
        fastapi_target("fastapi", server.url, images[:1], server.pid), 2, warmup_s=0.5, window_s=2
    )
    assert row["errors"] == 0 and row["requests"] > 0
    assert row["throughput_infer_per_s"] > 0
    assert row["latency_p50_ms"] <= row["latency_p99_ms"]
    assert 0 < row["server_cpu_cores"] <= psutil.cpu_count() + 0.5
    assert 0 <= row["other_cpu_cores"] <= psutil.cpu_count() + 0.5


def test_harness_records_errors_instead_of_stopping(server):
    broken = fastapi_target("broken", server.url, np.zeros((1, 3, 32, 32), np.float32), server.pid)
    row = measure(broken, 1, warmup_s=0.2, window_s=1)
    assert row["requests"] == 0 and row["errors"] > 0
    assert "HTTP 400" in row["first_error"] and "N,3,640,640" in row["first_error"]


def test_batching_app_answers_concurrent_requests_and_stops(images, reference):
    running = FastAPIServer(app="helpers.lessons.fastapi_vs_triton:batching_app", torch_threads=1).start()
    pid = running.pid
    try:
        with ThreadPoolExecutor(4) as pool:
            outputs = list(pool.map(lambda i: predict(running.url, images[i : i + 1]), range(4)))
        for index, output in enumerate(outputs):
            assert_same_output(output, reference[index : index + 1])
        assert_same_output(predict(running.url, images[:2]), reference[:2])
        status, reply, _ = post(running.url, GOOD_BODY, {"Content-Type": OCTET})
        assert status == 400 and b"X-Shape" in reply
    finally:
        # uvicorn shuts down gracefully, then re-raises the SIGTERM it caught: -15, not -9
        assert running.stop() == -signal.SIGTERM
    time.sleep(0.5)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
    assert not running.is_running()


def test_killing_the_parent_python_kills_the_server():
    script = textwrap.dedent(
        """
        import time
        from helpers.fastapi_server import FastAPIServer
        server = FastAPIServer(torch_threads=1).start()
        print(server.pid, flush=True)
        time.sleep(120)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    pid = int(parent.stdout.readline())
    assert psutil.pid_exists(pid)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie":
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"uvicorn (pid {pid}) outlived the Python process that started it")


# ------------------------------------------------------------- /detect: bytes in, boxes out


def detect(url: str, body: bytes, conf: float = 0.001) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{url}/detect?conf={conf}",
        data=body,
        headers={"Content-Type": "image/jpeg"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_detect_takes_a_jpeg_and_returns_the_boxes_of_the_in_process_pipeline(server, reference):
    status, found = detect(server.url, sample_image_path("bus.jpg").read_bytes())
    assert status == 200
    _, letterbox = preprocess(load_image(sample_image_path("bus.jpg")))
    expected = postprocess(reference[0], letterbox, coco_names(), conf=0.001)
    # The server folds BatchNorm (float rounding differs a little): boxes of nearly equal
    # scores may swap places far down the list, so compare the best 20 and the count.
    assert abs(len(found["detections"]) - len(expected)) <= 2 and len(expected) > 20
    assert found["labels"][:20] == [d["label"] for d in expected[:20]]
    np.testing.assert_allclose(
        np.array(found["detections"])[:20, :4], [d["box"] for d in expected[:20]], atol=0.5
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [(b"", "empty body"), (b"\x89PNG but not really" * 5, "not an image OpenCV can decode")],
)
def test_detect_names_a_bad_image_and_keeps_serving(server, body, message):
    status, reply = detect(server.url, body)
    assert status == 400 and message in reply["detail"]
    status, _ = detect(server.url, sample_image_path("zidane.jpg").read_bytes())
    assert status == 200
