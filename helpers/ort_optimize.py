"""Timing the CPU alternatives to TensorRT: ONNX Runtime optimisation levels and INT8 (notebook 02).

Saving a level to a file, the INT8 quantisation calls and the comparison of outputs are the
lesson, in notebook 02's cells (which also say why ``extended`` is the level saved). Here:
a session at one level, operator counts, interleaved timing of several sessions on the same
batch (a busy machine slows every variant alike; notebook 01 times one session with it) and
its latency table, and copying a variant into the model repository.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd

from helpers.loadgen import percentiles
from helpers.paths import MODEL_REPOSITORY

#: ONNX Runtime's graph optimisation levels, from none to everything.
LEVELS: dict[str, ort.GraphOptimizationLevel] = {
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
#: Model names of the CPU variants in the model repository.
ORTOPT_MODEL = "yolo11n_onnx_ortopt"
INT8_MODEL = "yolo11n_onnx_int8"


def make_session(
    model: str | os.PathLike[str], level: str = "all", threads: int = 0
) -> ort.InferenceSession:
    """A CPU inference session at one graph optimisation level; ``threads=0`` lets ORT pick (notebooks 01, 02)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = LEVELS[level]
    options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only: keep notebook output readable
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def op_counts(model: str | os.PathLike[str]) -> pd.Series:
    """Node count per ``domain:op_type`` in an ONNX file, most frequent first (notebook 02)."""
    graph = onnx.load(str(model), load_external_data=False).graph
    names = [f"{node.domain or 'ai.onnx'}:{node.op_type}" for node in graph.node]
    return pd.Series(names, dtype="object").value_counts().rename("nodes")


def sample_batch(batch_size: int) -> np.ndarray:
    """A float32 NCHW batch of real photos (bus.jpg, zidane.jpg, repeated), letterboxed (notebook 02)."""
    from helpers.lessons.yolo_client import preprocess
    from helpers.yolo import load_image, sample_image_path

    images = [load_image(sample_image_path(name)) for name in ("bus.jpg", "zidane.jpg")]
    return np.concatenate([preprocess(images[i % 2])[0] for i in range(batch_size)])


def time_sessions(
    sessions: Mapping[str, ort.InferenceSession],
    batch: np.ndarray,
    repeats: int = 10,
    warmup: int = 2,
) -> pd.DataFrame:
    """Time each session on ``batch`` (input ``images``) round by round; a row per call (notebook 02)."""
    feed = {"images": batch}
    for session in sessions.values():
        for _ in range(warmup):
            session.run(None, feed)
    rows = []
    for run in range(repeats):
        for name, session in sessions.items():
            start = time.perf_counter()
            session.run(None, feed)
            rows.append(
                {
                    "variant": name,
                    "batch": len(batch),
                    "run": run,
                    "latency_ms": (time.perf_counter() - start) * 1e3,
                }
            )
    return pd.DataFrame(rows)


def latency_table(times: pd.DataFrame, baseline: str | None = None) -> pd.DataFrame:
    """Per variant and batch: latency stats (ms), images/s and the speed-up over ``baseline`` (notebook 02)."""
    grouped = times.groupby(["variant", "batch"], sort=False)["latency_ms"]
    table = pd.DataFrame(
        {
            "mean_ms": grouped.mean(),
            "p50_ms": grouped.median(),
            "p90_ms": grouped.agg(lambda ms: percentiles(ms, (90,))[90]),
            "min_ms": grouped.min(),
            "runs": grouped.size(),
        }
    )
    batch = table.index.get_level_values("batch").to_numpy()
    table["images_per_s"] = batch / (table["p50_ms"].to_numpy() / 1e3)
    if baseline is not None:
        base = table.xs(baseline, level="variant")["p50_ms"]  # p50 per batch size
        table["speedup_vs_" + baseline] = base.loc[batch].to_numpy() / table["p50_ms"].to_numpy()
    return table.round(3)


def install_model(
    model_file: str | os.PathLike[str],
    model_name: str,
    model_repository: Path = MODEL_REPOSITORY,
    filename: str = "model.onnx",
) -> Path:
    """Copy a model file to ``<repo>/<model_name>/1/<filename>``, next to its config (notebook 02)."""
    config = model_repository / model_name / "config.pbtxt"
    if not config.exists():
        raise FileNotFoundError(f"{config} is missing: the model folder needs its config.pbtxt")
    target = model_repository / model_name / "1" / filename
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_file, target)
    return target
