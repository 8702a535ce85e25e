"""The baseline a team would write: YOLO11n in PyTorch behind FastAPI (introduced in notebook 06).

Run it with ``uvicorn helpers.fastapi_app:app`` (``helpers.fastapi_server`` does that).
The model is loaded once, at startup. ``POST /predict`` takes the same input the Triton
model ``yolo11n_onnx`` takes: the preprocessed float32 tensor ``[N, 3, 640, 640]`` as raw
bytes (``Content-Type: application/octet-stream``, the shape in an ``X-Shape: N,3,640,640``
header), and answers with the raw network output ``[N, 84, 8400]`` as float32 bytes (its
shape in ``X-Shape``), exactly what Triton returns as ``output0``. Pre- and post-processing
stay in the client for both services, so both servers do the same work per request.

``POST /detect`` is the service teams actually write (notebook 07): the bytes of an image
file in (``Content-Type: image/jpeg``, ``image/png``, ``image/webp``...), detections out as
JSON, with the decoding, letterbox, NMS and box mapping done in the server, as Triton's
``yolo11n_pipeline`` ensemble does. ``?conf=`` sets the score threshold.

The handler is a plain ``def``: FastAPI runs it in a thread pool (40 threads by default),
so concurrent requests overlap, each one running the whole network on its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import anyio.to_thread
import cv2
import numpy as np
import torch
from fastapi import Depends, FastAPI, Header, HTTPException, Request, Response

from helpers.yolo import (
    CONF_THRESHOLD,
    INPUT_SIZE,
    coco_names,
    load_yolo,
    postprocess,
    preprocess,
    torch_forward,
)

#: The largest batch one request may carry (the Triton config's max_batch_size).
MAX_BATCH = 8
STATE: dict = {}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load YOLO11n once, before the server accepts requests (introduced in notebook 06)."""
    loaded = load_yolo()  # pretrained weights if on disk, else random ones (timings still real)
    loaded.model.model.fuse(verbose=False)  # fold BatchNorm into conv, as Ultralytics' predict does
    STATE["yolo"] = loaded
    STATE["names"] = coco_names()
    yield
    STATE.clear()


app = FastAPI(title="YOLO11n, PyTorch + FastAPI baseline", lifespan=lifespan)


async def raw_body(request: Request) -> bytes:
    """The request body as bytes, whatever its content type (introduced in notebook 06)."""
    return await request.body()


def parse_shape(x_shape: str | None, size: int) -> tuple[int, ...]:
    """Check the X-Shape header against the body size; raise HTTP 400 naming what is wrong."""
    if not x_shape:
        raise HTTPException(
            400, f"missing header X-Shape (e.g. X-Shape: 1,3,{INPUT_SIZE},{INPUT_SIZE})"
        )
    try:
        shape = tuple(int(part) for part in x_shape.split(","))
    except ValueError:
        raise HTTPException(
            400, f"X-Shape must be integers separated by commas, got {x_shape!r}"
        ) from None
    expected = (3, INPUT_SIZE, INPUT_SIZE)
    if len(shape) != 4 or shape[1:] != expected or not 1 <= shape[0] <= MAX_BATCH:
        raise HTTPException(
            400,
            f"X-Shape must be N,{','.join(map(str, expected))} with 1 <= N <= {MAX_BATCH}, got {x_shape!r}",
        )
    needed = int(np.prod(shape)) * 4
    if size != needed:
        raise HTTPException(
            400, f"body has {size} bytes, but float32 of shape {list(shape)} needs {needed}"
        )
    return shape


def read_images(body: bytes, content_type: str | None, x_shape: str | None) -> np.ndarray:
    """The request's float32 [N, 3, 640, 640] tensor, or a 4xx naming what is wrong (notebook 06)."""
    if content_type != "application/octet-stream":
        raise HTTPException(
            415, f"Content-Type must be application/octet-stream, got {content_type!r}"
        )
    shape = parse_shape(x_shape, len(body))
    return np.frombuffer(body, dtype=np.float32).reshape(shape)


def tensor_response(output: np.ndarray) -> Response:
    """The raw output tensor as the response body, its shape in ``X-Shape`` (notebook 06)."""
    return Response(
        output.tobytes(),
        media_type="application/octet-stream",
        headers={"X-Shape": ",".join(map(str, output.shape))},
    )


@app.post("/predict")
def predict(
    body: Annotated[bytes, Depends(raw_body)],
    content_type: Annotated[str | None, Header()] = None,
    x_shape: Annotated[str | None, Header()] = None,
) -> Response:
    """Run YOLO11n on one request's tensor, the whole network, right now (notebook 06)."""
    images = read_images(body, content_type, x_shape)
    output = torch_forward(STATE["yolo"], images)  # [N, 84, 8400] float32
    return tensor_response(output)


#: Refuse images above this many pixels, as the Triton pipeline does.
MAX_PIXELS = 40_000_000


def decode_image(body: bytes) -> np.ndarray:
    """An image file's bytes -> BGR uint8 [H, W, 3], or HTTP 400 naming what is wrong (notebook 07)."""
    if not body:
        raise HTTPException(400, "empty body: send the bytes of a JPEG, PNG or WebP file")
    try:
        image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as error:
        raise HTTPException(400, f"the image could not be decoded: {error}") from None
    if image is None:
        raise HTTPException(400, f"not an image OpenCV can decode ({len(body)} bytes)")
    if image.shape[0] * image.shape[1] > MAX_PIXELS:
        raise HTTPException(400, f"{image.shape[1]}x{image.shape[0]} pixels is above {MAX_PIXELS}")
    return image


@app.post("/detect")
def detect(
    body: Annotated[bytes, Depends(raw_body)], conf: float = CONF_THRESHOLD
) -> dict[str, list]:
    """Image bytes in, boxes in original pixels out, all in this process (notebook 07)."""
    if not 0.0 <= conf <= 1.0:
        raise HTTPException(400, f"conf must be between 0 and 1, got {conf}")
    batch, letterboxes = preprocess(decode_image(body))
    output = torch_forward(STATE["yolo"], batch)
    (found,) = postprocess(output, letterboxes, STATE["names"], conf=conf)
    return {
        "detections": [[*d.box, d.score, d.class_id] for d in found],
        "labels": [d.label for d in found],
    }


@app.get("/health")
def health() -> dict[str, bool]:
    """200 once the model is loaded (introduced in notebook 06)."""
    return {"ready": "yolo" in STATE}


@app.get("/info")
async def info() -> dict[str, object]:
    """Which weights and how many CPU threads this process uses (introduced in notebook 06)."""
    loaded = STATE["yolo"]
    return {
        "weights": loaded.source,
        "pretrained": loaded.pretrained,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "handler_threads": anyio.to_thread.current_default_thread_limiter().total_tokens,
    }
