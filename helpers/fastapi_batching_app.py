"""The FastAPI baseline with a hand-written batching queue (introduced in notebook 06).

What teams end up re-implementing when the plain baseline (notebook 06's app cell, ``helpers.lessons.fastapi_vs_triton``) falls
over under load: an ``async`` handler puts each request on an ``asyncio.Queue`` and waits;
one background task takes the first waiting request, collects more for at most
``BATCH_MAX_WAIT_MS`` (or until ``MAX_BATCH`` images), runs them through the network as one
batch, and hands every request its slice of the output. Same API as the plain app.

One dedicated thread loads the model and runs every batch, so only one forward pass runs at a
time and torch's OpenMP threads never compete. It also avoids a quieter cost of the plain app:
OpenMP keeps one thread team per thread that calls into it, and once the teams together have
more threads than there are cores, libgomp stops spin-waiting between operators and puts its
threads to sleep, which slows a network of hundreds of small operators down a lot.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Annotated

import numpy as np
from fastapi import Depends, FastAPI, Header, Response

from helpers.lessons.fastapi_vs_triton import (
    MAX_BATCH,
    health,
    info,
    raw_body,
    read_images,
    tensor_response,
)
from helpers.lessons.fastapi_vs_triton import STATE as SHARED_STATE
from helpers.yolo import LoadedYolo, load_yolo, torch_forward

#: How long the first request of a batch waits for company (Triton's max_queue_delay).
MAX_WAIT_S = float(os.environ.get("BATCH_MAX_WAIT_MS", "2")) / 1000
STATE = SHARED_STATE  # /health and /info read the same dict
#: The one thread that loads the model and runs every batch.
INFERENCE = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")


async def batcher(queue: asyncio.Queue) -> None:
    """Take requests off ``queue`` in batches and answer each one (introduced in notebook 06)."""
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
        except Exception as error:  # noqa: BLE001 - every request of the batch gets the error
            for _, future in batch:
                future.set_exception(error)
            continue
        start = 0
        for part, future in batch:
            future.set_result(output[start : start + part.shape[0]])
            start += part.shape[0]


def load_fused_yolo() -> LoadedYolo:
    """YOLO11n with BatchNorm folded into the convolutions, as the plain app (notebook 06)."""
    loaded = load_yolo()
    loaded.model.model.fuse(verbose=False)
    return loaded


@asynccontextmanager
async def load_model_and_queue(app: FastAPI) -> AsyncIterator[None]:
    """Load YOLO11n once, in the inference thread, and start the batching task (notebook 06)."""
    STATE["yolo"] = await asyncio.get_running_loop().run_in_executor(INFERENCE, load_fused_yolo)
    STATE["queue"] = asyncio.Queue()
    task = asyncio.create_task(batcher(STATE["queue"]))
    yield
    task.cancel()
    STATE.clear()


app = FastAPI(title="YOLO11n, PyTorch + FastAPI with a batching queue", lifespan=load_model_and_queue)
app.get("/health")(health)
app.get("/info")(info)


@app.post("/predict")
async def predict_batched(
    body: Annotated[bytes, Depends(raw_body)],
    content_type: Annotated[str | None, Header()] = None,
    x_shape: Annotated[str | None, Header()] = None,
) -> Response:
    """Queue one request's tensor and wait for its part of a batch (notebook 06)."""
    images = read_images(body, content_type, x_shape)
    future = asyncio.get_running_loop().create_future()
    await STATE["queue"].put((images, future))
    output = await future
    return tensor_response(output)
