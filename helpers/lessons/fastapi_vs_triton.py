# Generated from notebooks/07_fastapi_vs_triton.ipynb by `make export`: do not edit.
# Edit the cells marked `#| export fastapi_vs_triton` there, then run `make export`.


# ---- cell 30b4a573
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import anyio.to_thread
import cv2
import numpy as np
import torch
from fastapi import Depends, FastAPI, Header, HTTPException, Request, Response

from helpers.lessons.yolo_client import postprocess, preprocess
from helpers.yolo import (
    CONF_THRESHOLD,
    INPUT_SIZE,
    coco_names,
    load_yolo,
    torch_forward,
)

MAX_BATCH = 8  # the largest batch one request may carry (the Triton config's max_batch_size)
MAX_PIXELS = 40_000_000  # /detect refuses larger images, as the Triton pipeline does
STATE: dict = {}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load YOLO11n once, before uvicorn accepts a request."""
    loaded = load_yolo()  # pretrained weights if on disk, else random ones (timings still real)
    loaded.model.model.fuse(verbose=False)  # fold BatchNorm into the convolutions, as predict does
    STATE.update(yolo=loaded, names=coco_names())
    yield
    STATE.clear()


app = FastAPI(title="YOLO11n, PyTorch + FastAPI baseline", lifespan=lifespan)


async def raw_body(request: Request) -> bytes:
    """The request body as bytes, whatever its content type."""
    return await request.body()


def read_images(body: bytes, content_type: str | None, x_shape: str | None) -> np.ndarray:
    """The request's float32 [N, 3, 640, 640] tensor, or a 4xx naming what is wrong."""
    if content_type != "application/octet-stream":
        raise HTTPException(415, f"Content-Type must be application/octet-stream, got {content_type!r}")
    if not x_shape:
        raise HTTPException(400, f"missing header X-Shape (e.g. X-Shape: 1,3,{INPUT_SIZE},{INPUT_SIZE})")
    try:
        shape = tuple(int(part) for part in x_shape.split(","))
    except ValueError:
        raise HTTPException(400, f"X-Shape must be integers separated by commas, got {x_shape!r}") from None
    if len(shape) != 4 or shape[1:] != (3, INPUT_SIZE, INPUT_SIZE) or not 1 <= shape[0] <= MAX_BATCH:
        raise HTTPException(
            400, f"X-Shape must be N,3,{INPUT_SIZE},{INPUT_SIZE} with 1 <= N <= {MAX_BATCH}, got {x_shape!r}"
        )
    needed = int(np.prod(shape)) * 4
    if len(body) != needed:
        raise HTTPException(400, f"body has {len(body)} bytes, but float32 of shape {list(shape)} needs {needed}")
    return np.frombuffer(body, dtype=np.float32).reshape(shape)


def tensor_response(output: np.ndarray) -> Response:
    """The raw output tensor as the response body, its shape in X-Shape."""
    shape = ",".join(map(str, output.shape))
    return Response(output.tobytes(), media_type="application/octet-stream", headers={"X-Shape": shape})


@app.post("/predict")
def predict(
    body: Annotated[bytes, Depends(raw_body)],
    content_type: Annotated[str | None, Header()] = None,
    x_shape: Annotated[str | None, Header()] = None,
) -> Response:
    """YOLO11n on one request's tensor, the whole network, right now."""
    images = read_images(body, content_type, x_shape)
    return tensor_response(torch_forward(STATE["yolo"], images))  # [N, 84, 8400] float32


def decode_image(body: bytes) -> np.ndarray:
    """An image file's bytes -> BGR uint8 [H, W, 3], or a 400 naming what is wrong."""
    if not body:
        raise HTTPException(400, "empty body: send the bytes of a JPEG, PNG or WebP file")
    try:
        image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:  # e.g. above OpenCV's own pixel limit, refused before decoding
        raise HTTPException(400, f"the image could not be decoded (at most {MAX_PIXELS} pixels)") from None
    if image is None:
        raise HTTPException(400, f"not an image OpenCV can decode ({len(body)} bytes)")
    if image.shape[0] * image.shape[1] > MAX_PIXELS:
        raise HTTPException(400, f"{image.shape[1]}x{image.shape[0]} pixels is above {MAX_PIXELS}")
    return image


@app.post("/detect")
def detect(body: Annotated[bytes, Depends(raw_body)], conf: float = CONF_THRESHOLD) -> dict[str, list]:
    """Notebook 08's route: image bytes in, boxes in original pixels out, all in this process."""
    if not 0.0 <= conf <= 1.0:
        raise HTTPException(400, f"conf must be between 0 and 1, got {conf}")
    batch, letterbox = preprocess(decode_image(body))
    found = postprocess(torch_forward(STATE["yolo"], batch)[0], letterbox, STATE["names"], conf=conf)
    return {"detections": [[*d["box"], d["score"], d["class_id"]] for d in found], "labels": [d["label"] for d in found]}


@app.get("/health")
def health() -> dict[str, bool]:
    """200 once the model is loaded."""
    return {"ready": "yolo" in STATE}


@app.get("/info")
async def info() -> dict[str, object]:
    """Which weights and how many CPU threads this process uses."""
    return {
        "weights": STATE["yolo"].source,
        "pretrained": STATE["yolo"].pretrained,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "handler_threads": anyio.to_thread.current_default_thread_limiter().total_tokens,
    }


# ---- cell 22
import json
from typing import Any

import numpy as np


def triton_request(
    images: np.ndarray, input_name: str = "images", output_name: str = "output0"
) -> tuple[bytes, dict[str, str]]:
    """Body and headers of a Triton HTTP/REST inference request with binary tensor data (notebook 07)."""
    images = np.ascontiguousarray(images, dtype=np.float32)
    data = images.tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": input_name,
                    "shape": list(images.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(data)},
                }
            ],
            "outputs": [{"name": output_name, "parameters": {"binary_data": True}}],
        }
    ).encode()
    headers = {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(header)),
    }
    return header + data, headers


def split_triton_reply(reply_headers: Any, data: bytes) -> tuple[dict[str, Any], bytes]:
    """A binary Triton reply -> (its JSON header, the raw output bytes) (notebook 07)."""
    length = int(reply_headers.get("Inference-Header-Content-Length", len(data)))
    return json.loads(data[:length]), data[length:]


# ---- cell batching-app
import asyncio
import os
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Annotated

import numpy as np
from fastapi import Depends, FastAPI, Header, Response
from fastapi.routing import APIRoute

from helpers.yolo import LoadedYolo, load_yolo, torch_forward

MAX_WAIT_S = float(os.environ.get("BATCH_MAX_WAIT_MS", "2")) / 1000  # the first request's wait for company
INFERENCE = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")  # loads the model, runs every batch


async def batcher(queue: asyncio.Queue) -> None:
    """Take requests off ``queue`` in batches of at most MAX_BATCH images and answer each one."""
    loop = asyncio.get_running_loop()
    waiting: tuple[np.ndarray, asyncio.Future] | None = None
    while True:
        first = waiting or await queue.get()
        waiting, batch = None, [first]
        size, deadline = first[0].shape[0], loop.time() + MAX_WAIT_S
        while size < MAX_BATCH:
            if queue.empty():  # wait for company, but only until the first one's deadline
                if loop.time() >= deadline:
                    break
                try:
                    item = await asyncio.wait_for(queue.get(), deadline - loop.time())
                except asyncio.TimeoutError:
                    break
            else:
                item = queue.get_nowait()
            if size + item[0].shape[0] > MAX_BATCH:
                waiting = item  # starts the next batch
                break
            batch.append(item)
            size += item[0].shape[0]
        images = np.concatenate([images for images, _ in batch])
        try:
            output = await loop.run_in_executor(INFERENCE, torch_forward, STATE["yolo"], images)
        except Exception as error:  # every request of the batch gets the error
            for _, future in batch:
                future.set_exception(error)
            continue
        start = 0
        for part, future in batch:
            future.set_result(output[start : start + part.shape[0]])
            start += part.shape[0]


def load_fused_yolo() -> LoadedYolo:
    """YOLO11n with BatchNorm folded into the convolutions, as the plain app loads it."""
    loaded = load_yolo()
    loaded.model.model.fuse(verbose=False)
    return loaded


@asynccontextmanager
async def load_model_and_queue(app: FastAPI) -> AsyncIterator[None]:
    """Load YOLO11n once, in the inference thread (one OpenMP team), and start the batching task."""
    STATE["yolo"] = await asyncio.get_running_loop().run_in_executor(INFERENCE, load_fused_yolo)
    STATE["queue"] = asyncio.Queue()
    task = asyncio.create_task(batcher(STATE["queue"]))
    yield
    task.cancel()
    STATE.clear()


batching_app = FastAPI(
    title="YOLO11n, PyTorch + FastAPI with a batching queue",
    lifespan=load_model_and_queue,
    routes=[APIRoute("/health", health, methods=["GET"]), APIRoute("/info", info, methods=["GET"])],
)


@batching_app.post("/predict")
async def predict_batched(
    body: Annotated[bytes, Depends(raw_body)],
    content_type: Annotated[str | None, Header()] = None,
    x_shape: Annotated[str | None, Header()] = None,
) -> Response:
    """Queue one request's tensor and wait for its part of a batch."""
    images = read_images(body, content_type, x_shape)
    future = asyncio.get_running_loop().create_future()
    await STATE["queue"].put((images, future))
    return tensor_response(await future)
