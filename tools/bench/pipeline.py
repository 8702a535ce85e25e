"""Bytes in, boxes out: Triton's ensemble vs the alternatives, one run (notebook 08).

``python -m tools.bench pipeline``: the same JPEG (bus.jpg) through three services on this
machine, all on loopback, all driven by ``helpers.loadgen`` at one concurrency, in
alternating rounds (this machine's speed drifts from minute to minute):

* ``ensemble``: the embedded Triton's ``yolo11n_pipeline`` (pre-processing, YOLO11n ONNX in
  the course's onnxruntime stand-in, post-processing), no response cache;
* ``client-side``: notebook 03's pipeline, decoding, letterbox and NMS in the client, the
  4.9 MB tensor to ``yolo11n_onnx`` on the same server;
* ``fastapi``: notebook 07's app's ``POST /detect`` (``helpers.lessons.fastapi_vs_triton``), the JPEG in and boxes out, all in
  PyTorch in one process.

Headline: ``vs_fastapi_c8`` = ensemble / FastAPI throughput, ``vs_clientside_c8`` = ensemble /
client-side throughput (medians of the rounds' ratios), and ``bytes_ratio`` = request bytes of
the client-side pipeline / of the ensemble.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

import pandas as pd

from helpers.export import sidecar_path
from helpers.fastapi_server import FastAPIServer
from helpers.loadgen import measure
from helpers.measure import missing_reason
from helpers.paths import MODEL_REPOSITORY
from helpers.pipelines import client_side_target, fastapi_detect_target, triton_target
from helpers.server import ServerError, TritonServer
from helpers.yolo import sample_image_path
from tools.bench import CannotRun, load_average

ENSEMBLE, CLIENT_SIDE, FASTAPI = "ensemble", "client-side", "fastapi"
#: With random weights every score is below 0.02: this threshold still leaves boxes for NMS.
CONF_RANDOM_WEIGHTS = 0.001


def run(argv: list[str]) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m tools.bench pipeline")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before each window")
    parser.add_argument("--window", type=float, default=8.0, help="measured seconds per run")
    args = parser.parse_args(argv)

    reason = missing_reason("yolo11n_onnx")
    if reason:
        raise CannotRun(f"{reason}: run notebook 01 (it exports YOLO11n) first")
    onnx = MODEL_REPOSITORY / "yolo11n_onnx" / "1" / "model.onnx"
    pretrained = json.loads(sidecar_path(onnx).read_text()).get("pretrained", False)
    conf = 0.25 if pretrained else CONF_RANDOM_WEIGHTS
    data = sample_image_path("bus.jpg").read_bytes()
    tensor_bytes = 3 * 640 * 640 * 4
    print(f"bus.jpg, {len(data)} bytes; the client-side pipeline sends {tensor_bytes} bytes")
    print(
        f"weights: {'pretrained' if pretrained else 'random'}; conf {conf}; {os.cpu_count()} cores"
    )
    print(
        f"concurrency {args.concurrency}, {args.rounds} rounds of warm-up {args.warmup:g} s + "
        f"window {args.window:g} s per service"
    )
    print(f"load average before: {load_average()}")
    rows = []
    try:
        with TritonServer(models=["yolo11n_pipeline"]) as triton, FastAPIServer() as fastapi:
            print(
                f"triton: {triton.mode}, yolo11n_onnx in the course's onnxruntime stand-in, "
                "pre/post-processing in Python models; fastapi: uvicorn, torch"
            )
            targets = [
                triton_target(
                    ENSEMBLE, triton.http_url, "yolo11n_pipeline", data, conf, triton.pid
                ),
                client_side_target(CLIENT_SIDE, triton.http_url, data, conf, triton.pid),
                fastapi_detect_target(FASTAPI, fastapi.url, data, conf, fastapi.pid),
            ]
            for round_number in range(1, args.rounds + 1):
                for target in targets:
                    row = measure(
                        target, args.concurrency, warmup_s=args.warmup, window_s=args.window
                    )
                    rows.append({"round": round_number, **row})
    except ServerError as error:
        raise CannotRun(str(error)) from error
    print(f"load average after: {load_average()}")
    frame = pd.DataFrame(rows)
    columns = [
        "round",
        "service",
        "throughput_infer_per_s",
        "latency_p50_ms",
        "latency_p99_ms",
        "errors",
    ]
    with pd.option_context("display.width", 120):
        print(frame[columns].round(2).to_string(index=False))
    if frame["errors"].sum():
        failed = frame[frame["errors"] > 0].iloc[0]
        raise CannotRun(f"{failed['service']} failed requests: {failed['first_error']}")
    by_round = frame.pivot(index="round", columns="service", values="throughput_infer_per_s")
    vs_fastapi = by_round[ENSEMBLE] / by_round[FASTAPI]
    vs_client = by_round[ENSEMBLE] / by_round[CLIENT_SIDE]
    print("ensemble / fastapi per round:", " ".join(f"{v:.2f}" for v in vs_fastapi))
    print("ensemble / client-side per round:", " ".join(f"{v:.2f}" for v in vs_client))
    medians = frame.groupby("service")[["throughput_infer_per_s", "latency_p99_ms"]].median()
    return {
        "vs_fastapi_c8": float(statistics.median(vs_fastapi)),
        "vs_clientside_c8": float(statistics.median(vs_client)),
        "bytes_ratio": tensor_bytes / len(data),
        "ensemble_ips": float(medians.loc[ENSEMBLE, "throughput_infer_per_s"]),
        "fastapi_ips": float(medians.loc[FASTAPI, "throughput_infer_per_s"]),
        "ensemble_p99_ms": float(medians.loc[ENSEMBLE, "latency_p99_ms"]),
        "fastapi_p99_ms": float(medians.loc[FASTAPI, "latency_p99_ms"]),
    }
