"""One call to sweep concurrency with whichever load tool runs here (introduced in notebook 05).

``measure_sweep`` dispatches to ``helpers.perf_analyzer.run`` when perf_analyzer runs on this
machine (or when asked for it), otherwise to the course's fallback generator (a
``helpers.loadgen.sweep`` of a ``triton_target``: the course's one load engine). Both give
``RESULT_COLUMNS``; this module adds the model, the configuration label, the launcher and how
many requests the server ran per execution (the batch it formed), so tables from either tool
look the same and say which tool made them.

    from helpers.measure import choose_tool, measure_sweep, payload_for
    tool = choose_tool("auto")
    frame = measure_sweep(server, "yolo11n_onnx", payload_for("yolo11n_onnx", image), [1, 2, 4],
                          tool=tool, config="dynamic batching 2 ms")
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from helpers import loadgen
from helpers import perf_analyzer as pa
from helpers.clients import client_for
from helpers.loadgen import Payload
from helpers.model_config import read_config
from helpers.paths import MODEL_REPOSITORY
from helpers.repository import missing_model_file
from helpers.statistics import model_stats

FALLBACK = "fallback generator"
PERF_ANALYZER = "perf_analyzer"
TOOLS = ("auto", PERF_ANALYZER, "fallback", FALLBACK)
#: Columns ``measure_sweep`` adds after ``RESULT_COLUMNS``.
LABEL_COLUMNS = ("model", "config", "launcher", "requests_per_execution")
#: The metrics of the model comparison table, with the labels it shows.
COMPARISON_METRICS: dict[str, str] = {
    "throughput_infer_per_s": "throughput (infer/s)",
    "latency_avg_ms": "latency avg (ms)",
    "latency_p50_ms": "latency p50 (ms)",
    "latency_p90_ms": "latency p90 (ms)",
    "latency_p99_ms": "latency p99 (ms)",
    "server_queue_ms": "server queue (ms)",
    "server_compute_infer_ms": "server compute infer (ms)",
}


@dataclass(frozen=True)
class ToolChoice:
    """The load tool a sweep uses and why (introduced in notebook 05)."""

    name: str  # "perf_analyzer" or "fallback generator"
    reason: str
    location: pa.PerfAnalyzerLocation | None = None

    def __str__(self) -> str:
        return f"{self.name}: {self.reason}"


def choose_tool(tool: str | ToolChoice = "auto") -> ToolChoice:
    """Resolve ``"auto"``, ``"perf_analyzer"`` or ``"fallback"`` to a tool and its reason (notebook 05).

    ``"auto"`` takes perf_analyzer whenever a runnable one is found, as the environment check
    does; ``"perf_analyzer"`` raises ``PerfAnalyzerError`` with the reason when none runs.
    """
    if isinstance(tool, ToolChoice):
        return tool
    if tool not in TOOLS:
        raise ValueError(f"tool must be one of {TOOLS}, got {tool!r}")
    if tool in ("fallback", FALLBACK):
        return ToolChoice(FALLBACK, "asked for with tool='fallback'")
    location = pa.find_perf_analyzer()
    if location.available:
        return ToolChoice(PERF_ANALYZER, location.reason, location)
    if tool == PERF_ANALYZER:
        raise pa.PerfAnalyzerError(f"perf_analyzer cannot run here: {location.reason}")
    return ToolChoice(FALLBACK, f"perf_analyzer cannot run here: {location.reason}")


def payload_for(model: str, images: np.ndarray, repository: str | Path | None = None) -> Payload:
    """The request for a one-input model: ``images`` under the input name its config.pbtxt gives (notebook 05).

    YOLO11n's ONNX model calls its input ``images``, the TorchScript one ``INPUT__0``.
    """
    folder = Path(repository or MODEL_REPOSITORY) / model
    config = read_config(folder)
    if len(config.input) != 1:
        raise ValueError(f"{model} has {len(config.input)} inputs; build its Payload by hand")
    return Payload({config.input[0].name: images}, [output.name for output in config.output])


def measure_sweep(
    server: Any,
    model: str,
    payload: Payload,
    concurrencies: Sequence[int],
    *,
    tool: str | ToolChoice = "auto",
    config: str = "",
    protocol: str = "grpc",
    warmup_s: float = 2.0,
    window_s: float = 3.0,
    max_windows: int = 5,
    progress: bool = True,
    **perf_options: Any,
) -> pd.DataFrame:
    """Sweep ``concurrencies`` on a running ``TritonServer`` with perf_analyzer or the fallback (notebook 05).

    Returns one row per level: ``RESULT_COLUMNS`` (``tool`` says which ran), then ``model``,
    ``config`` (your label), ``launcher`` and ``requests_per_execution`` (from the server's
    statistics: how many requests it ran together, on average; with perf_analyzer over its
    whole run of the level, warm-up trials included). ``window_s`` is the fallback's
    window and perf_analyzer's ``--measurement-interval``; ``max_windows`` its ``--max-trials``.
    ``perf_options`` go to ``helpers.perf_analyzer.run``; the fallback generator sends its
    tensors in the requests (``tools/bench/shm.py`` measures it over shared memory).
    """
    choice = choose_tool(tool)
    url = server.grpc_url if protocol == "grpc" else server.http_url
    if choice.name == PERF_ANALYZER:
        frame = _perf_analyzer_sweep(
            url,
            model,
            payload,
            concurrencies,
            choice,
            protocol,
            window_s,
            max_windows,
            progress,
            perf_options,
        )
    else:
        if perf_options.get("shared_memory", "none") != "none":
            raise ValueError("shared_memory is perf_analyzer's option; the fallback sends tensors")
        target = loadgen.triton_target(url, model, payload, protocol=protocol)
        frame = loadgen.sweep(
            [target],
            concurrencies,
            progress=progress,
            warmup_s=warmup_s,
            window_s=window_s,
            max_windows=max_windows,
            stop_on_error=True,
        )
        frame = frame.drop(columns=["service", "errors", "first_error"])  # one model, no error
        frame["tool"] = FALLBACK
    frame["model"] = model
    frame["config"] = config
    frame["launcher"] = getattr(server, "mode", "")
    frame["requests_per_execution"] = frame["server_success_delta"] / frame[
        "server_executions_delta"
    ].where(frame["server_executions_delta"] > 0)
    extra = [c for c in frame.columns if c not in pa.RESULT_COLUMNS and c not in LABEL_COLUMNS]
    # the fallback has no client-side split: NaN there
    return frame.reindex(columns=[*pa.RESULT_COLUMNS, *LABEL_COLUMNS, *extra])


def _perf_analyzer_sweep(
    url: str,
    model: str,
    payload: Payload,
    concurrencies: Sequence[int],
    choice: ToolChoice,
    protocol: str,
    window_s: float,
    max_windows: int,
    progress: bool,
    options: dict[str, Any],
) -> pd.DataFrame:
    """perf_analyzer one level at a time, each bracketed by consistent statistics snapshots."""
    options = dict(options)
    extra = [*options.pop("extra", ()), "--max-trials", str(max_windows)]
    rows = []
    client = client_for(url, protocol)
    try:
        for level in concurrencies:
            before = model_stats(client, model)
            frame = pa.run(
                model,
                [level],
                url=url,
                protocol=protocol,
                shape={name: array.shape[1:] for name, array in payload.arrays.items()},
                batch_size=payload.batch_size,
                measurement_interval_ms=int(window_s * 1000),
                extra=extra,
                location=choice.location,
                progress=progress,
                **options,
            )
            delta = model_stats(client, model) - before
            frame["server_success_delta"] = delta.success_count
            frame["server_executions_delta"] = delta.execution_count
            rows.append(frame)
    finally:
        client.close()
    return pd.concat(rows, ignore_index=True)


def missing_reason(model: str, repository: str | Path | None = None) -> str:
    """Why ``model`` cannot be served from the repository, or ``""`` when its files are there (notebook 05).

    The model file itself is checked by ``helpers.repository.missing_model_file``, the same
    check ``TritonServer.load_model`` makes, which also names the notebook that creates it.
    """
    repository = Path(repository or MODEL_REPOSITORY)
    if not (repository / model / "config.pbtxt").exists():
        return f"no {model}/config.pbtxt in the model repository"
    return missing_model_file(repository, model)


def comparison_table(
    frame: pd.DataFrame, baseline: str | None = None, label: str = "model"
) -> pd.DataFrame:
    """``| metric | value |`` per model, plus speed-up ratios against ``baseline`` (notebook 05).

    ``frame`` holds one row per model (same concurrency). Ratios are throughput / baseline
    throughput and baseline latency / latency, so above 1 always means faster.
    """
    rows = frame.set_index(label)
    if rows.index.duplicated().any():
        raise ValueError(f"one row per {label} expected; got {list(rows.index)}")
    baseline = baseline if baseline is not None else rows.index[0]
    table = rows[list(COMPARISON_METRICS)].T.rename(index=COMPARISON_METRICS)
    base = rows.loc[baseline]
    table.loc[f"throughput speed-up vs {baseline} (x)"] = (
        rows["throughput_infer_per_s"] / base["throughput_infer_per_s"]
    )
    table.loc[f"p50 latency speed-up vs {baseline} (x)"] = (
        base["latency_p50_ms"] / rows["latency_p50_ms"]
    )
    table.loc[f"p99 latency speed-up vs {baseline} (x)"] = (
        base["latency_p99_ms"] / rows["latency_p99_ms"]
    )
    table = table.astype(float).round(2).astype(object)
    table.loc["concurrency"] = rows["concurrency"].astype(int)
    table.loc["tool"] = rows["tool"]
    table.index.name = "metric"
    table.columns.name = None
    return table


def default_threads(instances: int) -> int:
    """CPU threads per instance so that all instances together use every core once (notebook 05)."""
    return max(1, (os.cpu_count() or 1) // max(1, instances))


def measure_configs(
    server: Any,
    model: str,
    configs: Mapping[str, Mapping[str, Any]],
    payload: Payload,
    concurrencies: Sequence[int],
    **options: Any,
) -> pd.DataFrame:
    """Load each config variant of ``model`` in turn and sweep it; ``config`` holds its label (notebook 05).

    ``configs`` maps a label to a config dict (``helpers.model_config.config_variant``); the
    model stays loaded with the last one. ``options`` go to ``measure_sweep``.
    """
    frames = []
    for label, config in configs.items():
        server.load_model(model, config=dict(config))
        frames.append(measure_sweep(server, model, payload, concurrencies, config=label, **options))
    return pd.concat(frames, ignore_index=True)
