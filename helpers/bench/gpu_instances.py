"""1 vs 2 GPU instances of the ``gpu`` YOLO11n export, with longer perf_analyzer windows.

``python -m helpers.bench gpu`` found no stable perf_analyzer window for 2 instances at
concurrency 32 with 2 s windows; this follow-up measures only that comparison, with 5 s
windows, and prints one table plus ``instances_gain``. Run it on a GPU machine:
``python -m helpers.bench.gpu_instances [--concurrency 16 32] [--window-ms 5000]``.
"""

from __future__ import annotations

import argparse
import shutil
import sys

import pandas as pd

from helpers.bench.gpu import INPUT, OUTPUT_BYTES, SIDE, export_variant, variant
from helpers.paths import build_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.bench.gpu_instances")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--window-ms", type=int, default=5000)
    args = parser.parse_args(argv)

    from helpers import perf_analyzer
    from helpers.server import TritonServer

    location = perf_analyzer.find_perf_analyzer(use_docker=False)
    if not location.available:
        print(f"cannot run here: {location.reason}", file=sys.stderr)
        return 3
    repository = build_dir("gpu_instances_repository")
    shutil.rmtree(repository)
    model = repository / "yolo11n_ts_gpu"
    export_variant(model, uint8_half=True)
    rows = []
    with TritonServer(repository, startup_timeout=120) as server:
        for instances in (1, 2):
            server.load_model(model.name, config=variant(model, True, instances))
            for level in args.concurrency:
                try:
                    frame = perf_analyzer.run(
                        model.name,
                        [level],
                        url=server.grpc_url,
                        protocol="grpc",
                        shape={INPUT: [3, SIDE, SIDE]},
                        measurement_interval_ms=args.window_ms,
                        shared_memory="system",
                        output_shared_memory_size=OUTPUT_BYTES,
                        extra=["--stability-percentage", "25", "--max-trials", "10"],
                        location=location,
                        results_dir=build_dir("gpu_perf_analyzer"),
                        progress=False,
                    )
                except perf_analyzer.PerfAnalyzerError as error:
                    print(
                        f"{instances} instance(s), concurrency {level}: "
                        f"{str(error).splitlines()[-1]}"
                    )
                    continue
                rows.append(frame.assign(instances=instances))
    table = pd.concat(rows, ignore_index=True)
    print(
        table[
            [
                "instances",
                "concurrency",
                "throughput_infer_per_s",
                "latency_p50_ms",
                "latency_p99_ms",
                "server_queue_ms",
                "server_compute_infer_ms",
            ]
        ]
        .round(2)
        .to_string(index=False)
    )
    pivot = table.pivot_table(
        index="concurrency", columns="instances", values="throughput_infer_per_s"
    )
    for level, row in pivot.iterrows():
        if {1, 2} <= set(row.dropna().index):
            print(f"concurrency {level}: instances_gain={row[2] / row[1]:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
