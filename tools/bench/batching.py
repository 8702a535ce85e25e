"""Dynamic batching on vs off, and 2 instances vs 1, on YOLO11n ONNX served here, one run.

``python -m tools.bench batching``: the embedded server (or Docker) serves
``model_repository/yolo11n_onnx`` with three config variants sent with the load request
(the file on disk is untouched), each measured at the same concurrency with the load tool
the environment allows (perf_analyzer, else the fallback generator), same request (bus.jpg
at 640x640): batching off with 1 instance; batching on (the shipped max queue delay) with
1 instance; batching on with 2 instances, the CPU threads split between them. Headline:
``gain`` = on / off throughput, ``instances_gain`` = 2 instances / 1 instance (both on).
Introduced with notebook 05, which runs the same sweeps with plots.
"""

from __future__ import annotations

import argparse

from helpers.lessons.yolo_client import preprocess
from helpers.measure import (
    choose_tool,
    default_threads,
    measure_configs,
    missing_reason,
    payload_for,
)
from helpers.model_config import config_variant
from helpers.perf_analyzer import PerfAnalyzerError
from helpers.results import save_results
from helpers.server import ServerError, TritonServer
from helpers.yolo import load_image, sample_image_path
from tools.bench import CannotRun

MODEL = "yolo11n_onnx"
OFF, ON, TWO = "batching off, 1 instance", "batching on, 1 instance", "batching on, 2 instances"


def run(argv: list[str]) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m tools.bench batching")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    parser.add_argument("--window", type=float, default=4.0, help="measurement window (s)")
    parser.add_argument("--max-windows", type=int, default=4, help="windows until stable")
    parser.add_argument("--tool", default="auto", choices=["auto", "perf_analyzer", "fallback"])
    args = parser.parse_args(argv)

    reason = missing_reason(MODEL)
    if reason:
        raise CannotRun(f"{reason}: run notebook 01 (it exports YOLO11n) first")
    try:
        tool = choose_tool(args.tool)
    except PerfAnalyzerError as error:
        raise CannotRun(str(error)) from error
    image, _ = preprocess(load_image(sample_image_path("bus.jpg")))
    shipped = config_variant(MODEL)
    delay = shipped.get("dynamic_batching", {}).get("max_queue_delay_microseconds", 0)
    threads = default_threads(2)
    configs = {
        OFF: config_variant(MODEL, instances=1, dynamic_batching=False),
        ON: config_variant(MODEL, instances=1, dynamic_batching=True),
        TWO: config_variant(
            MODEL,
            instances=2,
            dynamic_batching=True,
            parameters={"intra_op_thread_count": str(threads)},
        ),
    }
    print(f"{MODEL}, bus.jpg 1x3x640x640 per request, concurrency {args.concurrency}")
    print(f"load tool: {tool}")
    print(
        f"batching on = dynamic_batching, max_queue_delay_microseconds {delay}, max_batch_size "
        f"{shipped.get('max_batch_size')}; 1 instance uses onnxruntime's default threads, "
        f"2 instances use intra_op_thread_count {threads} each"
    )
    try:
        with TritonServer(models=[MODEL]) as server:
            print(f"server: {server.mode}")
            frame = measure_configs(
                server,
                MODEL,
                configs,
                payload_for(MODEL, image),
                [args.concurrency],
                tool=tool,
                warmup_s=args.warmup,
                window_s=args.window,
                max_windows=args.max_windows,
                progress=False,
            )
    except ServerError as error:
        raise CannotRun(str(error)) from error
    for _, row in frame.iterrows():
        print(
            f"  {row['config']}: {row['throughput_infer_per_s']:.2f} infer/s, "
            f"p50 {row['latency_p50_ms']:.0f} ms, p99 {row['latency_p99_ms']:.0f} ms, "
            f"queue {row['server_queue_ms']:.0f} ms, compute infer "
            f"{row['server_compute_infer_ms']:.0f} ms, "
            f"{row['requests_per_execution']:.2f} requests per execution"
        )
    print(f"saved: {save_results(frame, 'bench-batching')}")
    throughput = frame.set_index("config")["throughput_infer_per_s"]
    return {
        "gain": throughput[ON] / throughput[OFF],
        "instances_gain": throughput[TWO] / throughput[ON],
        "on_ips": throughput[ON],
        "off_ips": throughput[OFF],
        "two_instances_ips": throughput[TWO],
    }
