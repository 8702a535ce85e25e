"""Talk to a Triton server with ``tritonclient``, HTTP and gRPC: the course's plumbing (notebook 03).

Every request sends its tensors as binary data (raw bytes after a small JSON header on HTTP,
protobuf ``raw_input_contents`` on gRPC), never as JSON lists of numbers. The YOLO client a
learner writes (``preprocess``, ``postprocess``, ``detect``) is notebook 03's, generated into
``helpers.lessons.yolo_client``.

    from helpers.clients import infer
    outputs = infer(server, "yolo11n_onnx", {"images": batch})   # {"output0": array}
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from tritonclient.utils import np_to_triton_dtype

from helpers.model_config import ModelConfig, config_from_dict

if TYPE_CHECKING:
    from helpers.server import TritonServer

Protocol = Literal["http", "grpc"]
Arrays = Mapping[str, np.ndarray]


def client_module(protocol: Protocol) -> Any:
    """``tritonclient.http`` or ``tritonclient.grpc`` (introduced in notebook 03)."""
    if protocol == "http":
        import tritonclient.http as module
    elif protocol == "grpc":
        import tritonclient.grpc as module
    else:
        raise ValueError(f"protocol must be 'http' or 'grpc', not {protocol!r}")
    return module


def protocol_of(client: Any) -> Protocol:
    """Which protocol a sync or asyncio tritonclient client speaks (introduced in notebook 03)."""
    module = type(client).__module__
    if module.startswith("tritonclient.grpc"):
        return "grpc"
    if module.startswith("tritonclient.http"):
        return "http"
    raise TypeError(f"not a tritonclient client: {type(client).__name__}")


def client_for(target: Any, protocol: Protocol) -> Any:
    """A sync client for a server or URL; a client passed in is returned as is (notebook 03)."""
    if hasattr(target, "infer"):
        return target
    if not isinstance(target, str):  # a TritonServer: its address for this protocol
        target = target.http_url if protocol == "http" else target.grpc_url
    return client_module(protocol).InferenceServerClient(target)


def make_inputs(protocol: Protocol, arrays: Arrays) -> list[Any]:
    """``InferInput`` objects holding the arrays as binary tensor data (notebook 03)."""
    module = client_module(protocol)
    inputs = []
    for name, array in arrays.items():
        array = np.ascontiguousarray(array)
        tensor = module.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)  # binary: gRPC always, HTTP by default
        inputs.append(tensor)
    return inputs


def infer(
    target: Any, model: str, arrays: Arrays, *, protocol: Protocol = "grpc", version: str = ""
) -> dict[str, np.ndarray]:
    """One request; returns the outputs by name (introduced in notebook 03).

    ``target`` is a running ``TritonServer``, a ``host:port`` URL (both spoken to over
    ``protocol``) or a sync HTTP or gRPC client (its own protocol). A request to a
    ``TritonServer`` whose process died raises its ``ServerError``, which says so.
    """
    client = client_for(target, protocol)
    protocol = protocol_of(client)
    try:
        result = client.infer(model, make_inputs(protocol, arrays), model_version=version)
    except Exception as error:
        raise_if_server_died(target, error)
        raise
    finally:
        if client is not target:  # made for this call: an open connection delays server exit
            client.close()
    response = result.get_response(**_as_json(client))
    return {out["name"]: result.as_numpy(out["name"]) for out in response["outputs"]}


#: How long a request that lost its connection waits for the server process to finish exiting.
EXIT_GRACE_S = 1.0


def lost_connection(error: BaseException) -> bool:
    """Whether a client error says the connection to the server was refused, reset or closed."""
    if isinstance(error, OSError) or type(error).__name__ == "HTTPConnectionClosed":
        return True
    status = getattr(error, "status", None)
    return callable(status) and "UNAVAILABLE" in str(status())


def raise_if_server_died(target: Any, error: BaseException) -> None:
    """If ``target`` is a ``TritonServer`` whose process died, raise its ``ServerError``.

    Introduced in notebook 03. A request to a server that was killed fails with a bare
    connection error; this says so instead, with the exit code and the tail of the server log.
    """
    if not hasattr(target, "is_running") or target.process is None:
        return
    if target.is_running() and lost_connection(error):
        # A killed tritonserver closes its sockets while it is still exiting: wait for it.
        with contextlib.suppress(subprocess.TimeoutExpired):
            target.process.wait(timeout=EXIT_GRACE_S)
    if not target.is_running():
        from helpers.server import ServerError

        try:
            target._check_alive()
        except ServerError as died:
            raise died from error


def infer_concurrently(
    target: TritonServer | str,
    model: str,
    requests: Sequence[Arrays],
    concurrency: int = 8,
    protocol: Protocol = "grpc",
) -> list[dict[str, np.ndarray]]:
    """Send requests from ``concurrency`` threads, each with its own client; results in order.

    Introduced in notebook 03. At most ``concurrency`` requests are in flight at any time,
    like ``perf_analyzer --concurrency-range``.
    """
    local = threading.local()

    def one(arrays: Arrays) -> dict[str, np.ndarray]:
        if not hasattr(local, "client"):
            local.client = client_for(target, protocol)
        try:
            return infer(local.client, model, arrays)
        except Exception as error:
            raise_if_server_died(target, error)
            raise

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(one, requests))


# --------------------------------------------------------------------------- what the server says


def _as_json(client: Any) -> dict[str, bool]:
    """The keyword that makes a gRPC client answer in JSON (dicts), as an HTTP one does."""
    return {"as_json": True} if protocol_of(client) == "grpc" else {}


def model_io(client: Any, model: str) -> tuple[list[str], list[str]]:
    """The names of a model's inputs and outputs, from its metadata (notebook 03)."""
    metadata = client.get_model_metadata(model, **_as_json(client))
    return [t["name"] for t in metadata["inputs"]], [t["name"] for t in metadata["outputs"]]


def loaded_config(client: Any, model: str) -> ModelConfig:
    """The configuration Triton is running the model with, auto-completed (notebook 03)."""
    values = client.get_model_config(model, **_as_json(client))
    return config_from_dict(values.get("config", values))  # gRPC wraps it in {"config": ...}


# --------------------------------------------------------------------------- comparing detections


def detections_equal(first: Sequence[dict], second: Sequence[dict], atol: float = 1e-2) -> bool:
    """Same objects, same classes, boxes and scores within ``atol`` pixels/score (notebook 03).

    Detections are the dicts ``helpers.lessons.yolo_client.postprocess`` returns.
    """
    if len(first) != len(second):
        return False
    return all(
        a["class_id"] == b["class_id"]
        and abs(a["score"] - b["score"]) <= atol
        and np.allclose(a["box"], b["box"], atol=atol)
        for a, b in zip(first, second, strict=True)
    )
