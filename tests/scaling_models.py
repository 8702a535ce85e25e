"""A tiny real model repository for the scaling tests (tests/test_scaling.py, notebook 10's)."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from helpers.proxy import triton_replica
from helpers.scaling import model_successes
from helpers.statistics import wait_for
from tests.tiny_models import SIZE, build_tiny_repository

#: Served by the replicas: the tiny conv net (ONNX, through the course's ONNX Runtime stand-in).
MODEL = "tiny_onnx"
#: A slow Python model for the queue-time tests: one instance, sleeps DELAY_MS per request.
SLOW_MODEL = "slow"
DELAY_MS = 20

SLOW_CONFIG = f"""name: "{SLOW_MODEL}"
backend: "python"
max_batch_size: 0
input [ {{ name: "INPUT", data_type: TYPE_FP32, dims: [ -1 ] }} ]
output [ {{ name: "OUTPUT", data_type: TYPE_FP32, dims: [ -1 ] }} ]
instance_group [ {{ kind: KIND_CPU, count: 1 }} ]
"""
SLOW_MODEL_PY = f"""import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT").as_numpy()
            time.sleep({DELAY_MS} / 1000)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT", x)]))
        return responses
"""


@contextlib.contextmanager
def started_replicas(repository: Path, model: str, count: int = 2) -> Iterator[list]:
    """``count`` embedded Triton replicas serving ``model``, stopped on leaving the block."""
    servers = [triton_replica(repository, [model]) for _ in range(count)]
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()


def scaling_repository(root: Path) -> Path:
    """``root`` with the tiny ONNX model (version 1) and the slow Python model."""
    build = build_tiny_repository(root.parent / (root.name + "_build"))
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(build / MODEL, root / MODEL)
    (root / SLOW_MODEL / "1").mkdir(parents=True)
    (root / SLOW_MODEL / "config.pbtxt").write_text(SLOW_CONFIG)
    (root / SLOW_MODEL / "1" / "model.py").write_text(SLOW_MODEL_PY)
    return root


def add_version(repository: Path, model: str, version: int) -> Path:
    """Copy the model's version 1 as ``version`` (a "retrained" model to roll out)."""
    target = repository / model / str(version)
    shutil.copytree(repository / model / "1", target)
    return target


def sample(size: int = SIZE) -> np.ndarray:
    """One input image for the tiny model: [1, 3, size, size] float32."""
    return np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)


def successes_since(
    servers: Sequence[Any], model: str, before: Sequence[int], total: int, timeout: float = 5.0
) -> list[int]:
    """Requests of ``model`` each replica ran since ``before``, once they add up to ``total``.

    A replica counts a request in its statistics a moment after the answer has gone out, so
    counts read right after the last answer can be short (seen: 9 + 10 for 20 answers). After
    ``timeout`` seconds the counts are returned as they are, with a ``StatisticsWarning``.
    """

    def served() -> list[int]:
        return [model_successes(server, model) - b for server, b in zip(servers, before)]

    return wait_for(
        served, lambda counts: sum(counts) >= total, f"{total} {model} requests counted", timeout
    )
