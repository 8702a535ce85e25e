"""FastAPI + PyTorch vs Triton (ONNX, dynamic batching) under the same load, one run.

``python -m tools.bench fastapi-vs-triton``: three services on this machine at once, all
on loopback, all driven by ``helpers.loadgen`` (the same raw-HTTP client, the same bytes of
bus.jpg at 1x3x640x640, the same warm-up and window, levels interleaved):

* ``fastapi``: notebook 07's app (``helpers.lessons.fastapi_vs_triton``), YOLO11n in PyTorch, one forward pass per request in
  FastAPI's thread pool, torch pinned to one thread per core;
* ``fastapi+batching`` (unless ``--no-batching-baseline``): the same with a hand-written
  asyncio batching queue (notebook 07, ``helpers.lessons.fastapi_vs_triton.batching_app``);
* ``triton``: the embedded Triton serving ``model_repository/yolo11n_onnx`` with dynamic
  batching (``preferred_batch_size`` ``--preferred-batch``, 4) and ``--instances`` instances,
  the cores split between them.

Headline: ``ratio_c1`` and ``ratio_c8`` = Triton / FastAPI throughput at concurrency 1 and
8, ``p99_ratio_c8`` = Triton / FastAPI p99 latency at 8 (below 1 is better for Triton).
Introduced with notebook 07, which runs the same comparison with plots.
"""

from __future__ import annotations

import argparse
import os

import pandas as pd

from helpers.fastapi_server import FastAPIServer
from helpers.lessons.yolo_client import preprocess
from helpers.loadgen import fastapi_target, ratios, sweep, triton_http_target
from helpers.measure import default_threads, missing_reason
from helpers.model_config import config_variant
from helpers.server import ServerError, TritonServer
from helpers.yolo import load_image, sample_image_path
from tools.bench import CannotRun, load_average

MODEL = "yolo11n_onnx"
FASTAPI, BATCHING, TRITON = "fastapi", "fastapi+batching", "triton"
#: Triton's settings by default (notebook 07's parameters are the same): 2 instances, and a
#: preferred batch of 4 for the 8 requests in flight at the top level.
INSTANCES, PREFERRED_BATCH = 2, 4


def triton_config(instances: int, preferred_batch: int = 0) -> dict:
    """yolo11n_onnx with dynamic batching and ``instances`` instances sharing the cores.

    ``preferred_batch`` (0: none) is dynamic batching's ``preferred_batch_size``: with 8
    requests in flight and 2 instances, 4 gives each instance a batch instead of one of them
    all 8 (notebook 05 measures the knob; notebook 07 uses the same settings).
    """
    return config_variant(
        MODEL,
        instances=instances,
        dynamic_batching=True,
        preferred_batch_sizes=[preferred_batch] if preferred_batch else None,
        parameters={"intra_op_thread_count": str(default_threads(instances))},
    )


def run(argv: list[str]) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m tools.bench fastapi-vs-triton")
    parser.add_argument("--concurrency", default="1,8", help="levels, comma-separated")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    parser.add_argument("--window", type=float, default=8.0, help="measured seconds per run")
    parser.add_argument("--instances", type=int, default=INSTANCES, help="Triton model instances")
    parser.add_argument(
        "--preferred-batch",
        type=int,
        default=PREFERRED_BATCH,
        help="Triton's preferred_batch_size (0: none)",
    )
    parser.add_argument("--no-batching-baseline", action="store_true")
    args = parser.parse_args(argv)
    levels = sorted({int(level) for level in args.concurrency.split(",")} | {1, 8})

    reason = missing_reason(MODEL)
    if reason:
        raise CannotRun(f"{reason}: run notebook 01 (it exports YOLO11n) first")
    image, _ = preprocess(load_image(sample_image_path("bus.jpg")))
    cores = os.cpu_count() or 1
    config = triton_config(args.instances, args.preferred_batch)
    delay = int(config["dynamic_batching"].get("max_queue_delay_microseconds", 0))
    print(f"YOLO11n, bus.jpg as 1x3x640x640 float32 per request; {cores} CPU cores")
    print(f"concurrency {levels}, warm-up {args.warmup:g} s, window {args.window:g} s")
    print(f"load average before: {load_average()}")
    try:
        with (
            FastAPIServer(torch_threads=cores) as plain,
            FastAPIServer(  # the hand-written queue waits as long as Triton's batcher
                app="helpers.lessons.fastapi_vs_triton:batching_app",
                torch_threads=cores,
                env={"BATCH_MAX_WAIT_MS": str(delay / 1000)},
            ) as batched,
            TritonServer(models=[MODEL]) as triton,
        ):
            triton.load_model(MODEL, config=config)
            info = plain.info()
            print(
                f"fastapi: uvicorn, 1 worker, torch {info['torch']} with {info['torch_threads']} "
                f"intra-op threads, {info['handler_threads']} handler threads"
            )
            print(f"weights: {info['weights']}")
            print(
                f"triton: {triton.mode}, onnxruntime stand-in, {args.instances} instance(s) x "
                f"{default_threads(args.instances)} intra-op thread(s), dynamic batching "
                f"(max_queue_delay {delay} us, preferred_batch_size "
                f"{config['dynamic_batching'].get('preferred_batch_size', 'none')}, "
                f"max_batch_size {config['max_batch_size']})"
            )
            targets = [fastapi_target(FASTAPI, plain.url, image, plain.pid)]
            if not args.no_batching_baseline:
                targets.append(fastapi_target(BATCHING, batched.url, image, batched.pid))
            targets.append(triton_http_target(TRITON, triton.http_url, MODEL, image, triton.pid))
            frame = sweep(
                targets, levels, warmup_s=args.warmup, window_s=args.window, progress=False
            )
    except ServerError as error:
        raise CannotRun(str(error)) from error
    print(f"load average after: {load_average()}")
    columns = {
        "throughput_infer_per_s": "infer/s",
        "latency_p50_ms": "p50 ms",
        "latency_p95_ms": "p95 ms",
        "latency_p99_ms": "p99 ms",
        "errors": "errors",
        "server_cpu_cores": "server cores",
        "client_cpu_cores": "client cores",
        "other_cpu_cores": "other cores",
    }
    table = frame.set_index(["concurrency", "service"])[list(columns)].rename(columns=columns)
    with pd.option_context("display.width", 120):
        print(table.round(2).to_string())
    for _, row in frame[frame["errors"] > 0].iterrows():
        print(
            f"  {row['service']} at {row['concurrency']}: {row['errors']} errors: {row['first_error']}"
        )
    print(
        "(cores: CPU time over the window / window; 'other' = every other process on the machine, "
        f"at most {frame['other_cpu_cores'].max():.2f} cores in any run)"
    )
    ratio = ratios(frame, TRITON, FASTAPI)
    throughput = frame[frame["concurrency"] == 8].set_index("service")["throughput_infer_per_s"]
    print("triton / fastapi:")
    print(ratio.round(2).to_string())
    return {
        "ratio_c1": float(ratio.loc[1, "throughput_ratio"]),
        "ratio_c8": float(ratio.loc[8, "throughput_ratio"]),
        "p99_ratio_c8": float(ratio.loc[8, "p99_ratio"]),
        "fastapi_ips_c8": float(throughput[FASTAPI]),
        "triton_ips_c8": float(throughput[TRITON]),
    }
