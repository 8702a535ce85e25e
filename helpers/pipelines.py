"""Bytes in, boxes out: the client of notebook 08 and the load targets that compare pipelines.

The ``*_target`` functions wrap each way of serving "image in, boxes out" as a
``helpers.loadgen.Target`` for notebook 08's measurement and ``python -m tools.bench pipeline``;
the Triton ones send with ``detect_http``, the client notebook 08's cell teaches
(``helpers.lessons.pipeline_client``).
"""

from __future__ import annotations

import cv2
import numpy as np
import tritonclient.http as httpclient

from helpers.lessons.pipeline_client import detect_http
from helpers.lessons.yolo_client import postprocess, preprocess
from helpers.loadgen import Target, http_sender
from helpers.yolo import coco_names


def triton_target(
    name: str, url: str, model: str, data: bytes, conf: float, pid: int | None
) -> Target:
    """``model`` (an ensemble or BLS pipeline) fed ``data``, one client per thread (notebook 08)."""

    def new_sender():
        client = httpclient.InferenceServerClient(url)
        return lambda: detect_http(client, data, conf, model=model)

    return Target(name, new_sender, pid)


def client_side_target(name: str, url: str, data: bytes, conf: float, pid: int | None) -> Target:
    """Notebook 03's pipeline: decode and letterbox here, ``yolo11n_onnx`` there, NMS here (notebook 08)."""
    names = coco_names()

    def new_sender():
        client = httpclient.InferenceServerClient(url)

        def send() -> None:
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            batch, letterbox = preprocess(image)
            request = httpclient.InferInput("images", list(batch.shape), "FP32")
            request.set_data_from_numpy(batch)
            output = client.infer("yolo11n_onnx", [request]).as_numpy("output0")
            postprocess(output[0], letterbox, names, conf=conf)

        return send

    return Target(name, new_sender, pid)


def fastapi_detect_target(name: str, url: str, data: bytes, conf: float, pid: int | None) -> Target:
    """The FastAPI baseline's ``POST /detect`` with the image file (notebook 08)."""

    def check(reply, body: bytes) -> None:
        if reply.status != 200:
            raise RuntimeError(f"HTTP {reply.status}: {body[:200]!r}")

    headers = {"Content-Type": "application/octet-stream"}
    return Target(name, lambda: http_sender(url, f"/detect?conf={conf}", data, headers, check), pid)
