"""YOLO11n ONNX served by the embedded Triton vs onnxruntime in-process, same machine, one run.

In-process: onnxruntime running requests back to back, as one session (onnxruntime's
default threads) at batch 1 and at the model's max batch, and as two sessions of 1 thread
each in two Python threads at batch 1 (what 2 served instances do); the best of these is the
baseline. Served: the same model.onnx through
the embedded server with dynamic batching, 1 instance (onnxruntime's default threads) or
2 instances of 1 thread, these with the repository's 2 ms queue delay or none, driven by
the fallback load generator over gRPC with the tensors in the request or in system shared
memory (as ``perf_analyzer --shared-memory=system``); the best of these six is compared.
(With 2 instances and a queue delay, the batcher can gather the requests of both into one
batch for one instance while the other waits; where batching does not make an image
cheaper, as on a CPU, that costs throughput.)

A shared machine's speed drifts by 10% from one minute to the next, more than the effect
measured, so after choosing both sides the benchmark alternates them for ``--rounds``
rounds (in-process, then served) and reports the median of the per-round ratios, with the
range. Also reports how long the server takes from start to the model being READY.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import onnxruntime as ort

from helpers.lessons.yolo_client import preprocess
from helpers.loadgen import Payload, closed_loop_window, measure
from helpers.model_config import config_variant
from helpers.paths import MODEL_REPOSITORY
from helpers.server import ServerError, TritonServer
from helpers.yolo import load_image, sample_image_path
from tools.bench import CannotRun
from tools.bench.shm import shm_target

MODEL = "yolo11n_onnx"


def session(model_path: str, threads: int = 0) -> ort.InferenceSession:
    """An onnxruntime CPU session with ``threads`` intra-op threads (0: onnxruntime's default)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])


def inprocess_throughput(
    sessions: list[ort.InferenceSession], batch: np.ndarray, seconds: float
) -> float:
    """Images per second of ``sessions``, one Python thread each, running ``batch`` back to back.

    The same closed loop as the served side (``helpers.loadgen.closed_loop_window``): one warm-up
    run per session, then a window of ``seconds``.
    """

    def sender(one: ort.InferenceSession):
        def run() -> None:
            one.run(None, {"images": batch})

        return run

    window = closed_loop_window(
        [sender(one) for one in sessions], warmup_s=0, warmup_requests=1, window_s=seconds
    )
    if window.first_error is not None:
        raise window.first_error
    return len(window.requests) * batch.shape[0] / window.seconds


def run(argv: list[str]) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m tools.bench served-vs-inprocess")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--window", type=float, default=3.0, help="load generator window (s)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating comparison rounds")
    args = parser.parse_args(argv)

    model_path = MODEL_REPOSITORY / MODEL / "1" / "model.onnx"
    if not model_path.exists():
        raise CannotRun(f"{model_path} is missing: run notebook 01 (it exports YOLO11n) first")
    image, _ = preprocess(load_image(sample_image_path("bus.jpg")))
    max_batch = int(config_variant(MODEL)["max_batch_size"])
    single = [session(str(model_path))]
    inprocess_options = {
        "1 session, batch 1": (single, image),
        f"1 session, batch {max_batch}": (single, np.repeat(image, max_batch, axis=0)),
        "2 sessions x 1 thread, batch 1": ([session(str(model_path), 1) for _ in "ab"], image),
    }

    print(f"in-process onnxruntime {ort.__version__}, {model_path.name}, 640x640")
    inprocess = {}
    for label, (sessions, batch) in inprocess_options.items():
        inprocess[label] = inprocess_throughput(sessions, batch, 3 * args.window)
        print(f"  {label}: {inprocess[label]:.2f} images/s")
    best_local = max(inprocess, key=inprocess.get)

    one_thread = {"intra_op_thread_count": "1"}
    configs = {
        "1 instance": config_variant(MODEL, instances=1),
        "2 instances x 1 thread": config_variant(MODEL, instances=2, parameters=one_thread),
        "2 instances x 1 thread, no queue delay": config_variant(
            MODEL, instances=2, parameters=one_thread, max_queue_delay_us=0
        ),
    }
    started = time.perf_counter()
    try:
        with TritonServer(models=[MODEL]) as server:
            ready_s = time.perf_counter() - started
            print(f"embedded Triton: start to {MODEL} READY in {ready_s:.2f} s")

            def served(config: str, memory: str) -> float:
                row = measure(
                    shm_target(server.grpc_url, MODEL, Payload({"images": image}), memory),
                    args.concurrency,
                    warmup_s=2,
                    window_s=args.window,
                    max_windows=3,
                    stop_on_error=True,
                )
                print(
                    f"  served, {config}, dynamic batching, concurrency {args.concurrency}, "
                    f"shared memory {memory}: {row['throughput_infer_per_s']:.2f} images/s, "
                    f"p50 {row['latency_p50_ms']:.0f} ms, p99 {row['latency_p99_ms']:.0f} ms, "
                    f"{row['server_success_delta'] / max(row['server_executions_delta'], 1):.1f} "
                    "requests per execution"
                )
                return row["throughput_infer_per_s"]

            screening = {}
            for config, values in configs.items():
                server.load_model(MODEL, config=values)
                for memory in ("none", "system"):
                    screening[config, memory] = served(config, memory)
            best_config, best_memory = max(screening, key=screening.get)
            server.load_model(MODEL, config=configs[best_config])

            print(
                f"alternating rounds: in-process {best_local} vs served "
                f"{best_config}, shared memory {best_memory}"
            )
            rounds = []
            for number in range(1, args.rounds + 1):
                local = inprocess_throughput(*inprocess_options[best_local], 3 * args.window)
                print(f"round {number}: in-process {local:.2f} images/s")
                remote = served(best_config, best_memory)
                rounds.append((local, remote, remote / local))
                print(f"round {number}: ratio {remote / local:.3f}")
    except ServerError as error:
        raise CannotRun(str(error)) from error
    ratios = [ratio for _, _, ratio in rounds]
    ratio = statistics.median(ratios)
    print(
        f"served / in-process, median of {len(ratios)} rounds = {ratio:.3f} "
        f"(range {min(ratios):.3f} to {max(ratios):.3f})"
    )
    return {
        "ratio": ratio,
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "served_ips": statistics.median(remote for _, remote, _ in rounds),
        "inprocess_ips": statistics.median(local for local, _, _ in rounds),
        "ready_s": ready_s,
    }
