# Generated from notebooks/05_faster_whisper_python_backend.ipynb by `make export`: do not edit.
# Edit the cells marked `#| export whisper` there, then run `make export`.


# ---- cell 29
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Transcript:
    """What the served model returns for one audio file (introduced in notebook 05)."""

    text: str
    segments: list[dict[str, Any]] = field(default_factory=list)
    language: str = ""
    language_probability: float = 0.0
    duration: float = 0.0


def build_inputs(
    audio: bytes,
    protocol: Any,
    *,
    language: str | None = None,
    task: str | None = None,
    beam_size: int | None = None,
    word_timestamps: bool | None = None,
) -> list[Any]:
    """The InferInputs for one audio file: AUDIO plus the options given (notebook 05).

    ``protocol`` is the ``tritonclient.http`` or ``tritonclient.grpc`` module. Every
    tensor has shape [1, 1]: a batch of one, one element.
    """
    tensors: list[tuple[str, np.ndarray, str]] = [
        ("AUDIO", np.array([[audio]], dtype=np.object_), "BYTES")
    ]
    if language is not None:
        tensors.append(("LANGUAGE", np.array([[language.encode()]], dtype=np.object_), "BYTES"))
    if task is not None:
        tensors.append(("TASK", np.array([[task.encode()]], dtype=np.object_), "BYTES"))
    if beam_size is not None:
        tensors.append(("BEAM_SIZE", np.array([[beam_size]], dtype=np.int32), "INT32"))
    if word_timestamps is not None:
        tensors.append(("WORD_TIMESTAMPS", np.array([[word_timestamps]], dtype=bool), "BOOL"))
    inputs = []
    for name, array, datatype in tensors:
        tensor = protocol.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def parse_result(result: Any, index: int = 0) -> Transcript:
    """Read one batch item of an InferResult (HTTP or gRPC) back into a Transcript."""
    text = result.as_numpy("TEXT").reshape(-1)[index]
    segments = result.as_numpy("SEGMENTS").reshape(-1)[index]
    language = result.as_numpy("DETECTED_LANGUAGE").reshape(-1)[index]
    return Transcript(
        # BYTES outputs arrive as raw bytes: the model encoded them as UTF-8.
        text=text.decode("utf-8"),
        segments=json.loads(segments.decode("utf-8")),
        language=language.decode("utf-8"),
        language_probability=float(result.as_numpy("LANGUAGE_PROBABILITY").reshape(-1)[index]),
        duration=float(result.as_numpy("DURATION").reshape(-1)[index]),
    )


# ---- cell 33
def transcribe(
    client: Any, audio: bytes, model_name: str = "faster_whisper_python", **options: Any
) -> Transcript:
    """Transcribe one audio file with a tritonclient HTTP or gRPC client (notebook 05)."""
    if type(client).__module__.startswith("tritonclient.grpc"):
        import tritonclient.grpc as protocol
    else:
        import tritonclient.http as protocol
    return parse_result(client.infer(model_name, build_inputs(audio, protocol, **options)))


# ---- cell 50
import queue
import time
from collections.abc import Iterator


def stream_segments(
    grpc_url: str,
    audio: bytes,
    model_name: str = "faster_whisper_python_stream",
    timeout: float = 300.0,
    **options: Any,
) -> Iterator[tuple[float, dict[str, Any]]]:
    """Yield ``(seconds since sent, segment)`` as the decoupled model sends each one.

    Introduced in notebook 05. Uses a gRPC bidirectional stream; the empty final response
    (``enable_empty_final_response``) says the request is complete. A request error is
    raised as ``tritonclient.utils.InferenceServerException``.
    """
    import tritonclient.grpc as grpcclient

    replies: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client = grpcclient.InferenceServerClient(grpc_url)
    try:
        client.start_stream(callback=lambda result, error: replies.put((result, error)))
        sent = time.perf_counter()
        client.async_stream_infer(
            model_name,
            build_inputs(audio, grpcclient, **options),
            enable_empty_final_response=True,
        )
        while True:
            result, error = replies.get(timeout=timeout)
            if error is not None:
                raise error
            response = result.get_response()
            if result.as_numpy("SEGMENTS") is not None:
                arrived = time.perf_counter() - sent
                for segment in parse_result(result).segments:
                    yield arrived, segment
            if response.parameters["triton_final_response"].bool_param:
                return
    finally:
        client.stop_stream()
        client.close()
