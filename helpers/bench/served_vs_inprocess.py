"""YOLO11n ONNX served by the embedded Triton vs onnxruntime in-process, same machine, one run.

In-process: one onnxruntime session, requests back to back, at batch 1 and at the model's
max batch; the better of the two is the baseline. Served: the same model.onnx through the
embedded server (dynamic batching) with 1 and 2 instances, driven by the fallback load
generator over gRPC; the better is compared. Also reports how long the server takes from
start to the model being READY.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnxruntime as ort

from helpers.bench import CannotRun
from helpers.loadgen import Payload, measure
from helpers.model_config import config_variant
from helpers.paths import MODEL_REPOSITORY
from helpers.server import ServerError, TritonServer
from helpers.yolo import bus_image_path, load_image, preprocess

MODEL = "yolo11n_onnx"


def inprocess_throughput(model_path: str, batch: np.ndarray, seconds: float) -> float:
    """Images per second of one onnxruntime session running ``batch`` back to back."""
    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    session.run(None, {"images": batch})  # warm-up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        session.run(None, {"images": batch})
        done += batch.shape[0]
    return done / (time.perf_counter() - start)


def run(argv: list[str]) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m helpers.bench served-vs-inprocess")
    parser.add_argument("--seconds", type=float, default=12, help="in-process time per batch size")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--window", type=float, default=4.0, help="load generator window (s)")
    args = parser.parse_args(argv)

    model_path = MODEL_REPOSITORY / MODEL / "1" / "model.onnx"
    if not model_path.exists():
        raise CannotRun(f"{model_path} is missing: run notebook 01 (it exports YOLO11n) first")
    image, _ = preprocess(load_image(bus_image_path()))
    max_batch = int(config_variant(MODEL)["max_batch_size"])

    print(f"in-process onnxruntime {ort.__version__}, {model_path.name}, 640x640")
    inprocess = {}
    for batch_size in (1, max_batch):
        batch = np.repeat(image, batch_size, axis=0)
        inprocess[batch_size] = inprocess_throughput(str(model_path), batch, args.seconds)
        print(f"  batch {batch_size}: {inprocess[batch_size]:.2f} images/s")
    best_inprocess = max(inprocess.values())

    started = time.perf_counter()
    served: dict[str, float] = {}
    try:
        with TritonServer(models=[MODEL]) as server:
            ready_s = time.perf_counter() - started
            print(f"embedded Triton: start to {MODEL} READY in {ready_s:.2f} s")
            variants = {
                "1 instance": config_variant(MODEL, instances=1),
                "2 instances, 1 thread each": config_variant(
                    MODEL, instances=2, parameters={"intra_op_thread_count": "1"}
                ),
            }
            for label, config in variants.items():
                server.load_model(MODEL, config=config)
                row = measure(
                    server.grpc_url,
                    MODEL,
                    Payload({"images": image}),
                    args.concurrency,
                    warmup_s=3,
                    window_s=args.window,
                    max_windows=4,
                )
                served[label] = row["throughput_infer_per_s"]
                print(
                    f"  served, {label}, dynamic batching, concurrency {args.concurrency}: "
                    f"{served[label]:.2f} images/s, p50 {row['latency_p50_ms']:.0f} ms, "
                    f"p99 {row['latency_p99_ms']:.0f} ms, "
                    f"{row['server_success_delta'] / max(row['server_executions_delta'], 1):.1f} "
                    "requests per execution"
                )
    except ServerError as error:
        raise CannotRun(str(error)) from error
    best_label = max(served, key=served.get)
    ratio = served[best_label] / best_inprocess
    print(f"best served ({best_label}) / best in-process = {ratio:.2f}")
    return {
        "ratio": ratio,
        "served_ips": served[best_label],
        "inprocess_ips": best_inprocess,
        "ready_s": ready_s,
    }
