"""perf_analyzer vs the course's fallback generator, same model, server and transport, on a GPU.

Notebook 04 measures with the fallback generator wherever perf_analyzer cannot run (its
wheel needs glibc >= 2.38). This checks how far the two tools' figures are apart: the
``gpu`` YOLO11n export with dynamic batching on one GPU instance, at each concurrency,
over system shared memory and over plain gRPC, the two tools taking turns ``--repeats``
times so that drift of the machine hits both alike. Prints each run, the medians per tool
and the gaps (|fallback - perf_analyzer| / perf_analyzer), writes a dated CSV
(``perftools-<host>-<date>.csv``) to ``--out``, and as its last line
``gpu-tools: tput_gap=... p50_gap=...`` (the largest gaps over all points).

Run it on a GPU machine: ``python -m helpers.bench.gpu_tools [--concurrency 1 8 32]``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.bench import headline
from helpers.bench.gpu import INPUT, OUTPUT_BYTES, SIDE, export_variant, machine_facts, variant
from helpers.loadgen import Payload, measure
from helpers.paths import REPO_ROOT, build_dir
from helpers.results import save_results

FALLBACK, PERF_ANALYZER = "fallback generator", "perf_analyzer"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.bench.gpu_tools")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--window-ms", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "results")
    args = parser.parse_args(argv)

    from helpers import perf_analyzer
    from helpers.server import TritonServer

    location = perf_analyzer.find_perf_analyzer(use_docker=False)
    if not location.available:
        print(f"cannot run here: {location.reason}", file=sys.stderr)
        return 3
    repository = build_dir("gpu_tools_repository")
    shutil.rmtree(repository)
    model = repository / "yolo11n_ts_gpu"
    export_variant(model, uint8_half=True)
    image = np.random.default_rng(0).integers(0, 256, (1, 3, SIDE, SIDE), dtype=np.uint8)
    rows = []
    with TritonServer(repository, startup_timeout=120) as server:
        server.load_model(model.name, config=variant(model, batching=True))
        for memory in ("system", "none"):
            for level in args.concurrency:
                for repeat in range(args.repeats):
                    ran = []
                    try:
                        measured = perf_analyzer.run(
                            model.name,
                            [level],
                            url=server.grpc_url,
                            protocol="grpc",
                            shape={INPUT: [3, SIDE, SIDE]},
                            measurement_interval_ms=args.window_ms,
                            shared_memory=memory,
                            output_shared_memory_size=OUTPUT_BYTES,
                            extra=["--stability-percentage", "25", "--max-trials", "8"],
                            location=location,
                            results_dir=build_dir("gpu_perf_analyzer"),
                            progress=False,
                        ).iloc[0]
                        ran.append(measured.to_dict() | {"shared_memory": memory})
                    except perf_analyzer.PerfAnalyzerError as error:
                        print(f"perf_analyzer, c{level}, {memory}: {str(error).splitlines()[-1]}")
                    ran.append(
                        measure(
                            server.grpc_url,
                            model.name,
                            Payload({INPUT: image}),
                            level,
                            warmup_s=2,
                            window_s=args.window_ms / 1000,
                            max_windows=8,
                            shared_memory=memory,
                        )
                    )
                    rows += ran
                    for row in ran:
                        print(
                            f"c{level} {memory} repeat {repeat} {row['tool']}: "
                            f"{row['throughput_infer_per_s']:.1f} infer/s, "
                            f"p50 {row['latency_p50_ms']:.2f} ms",
                            flush=True,
                        )
    results = pd.DataFrame(rows).assign(
        config="gpu, batching on, 1 instance(s)", model="gpu", batching=True, instances=1
    )
    facts = machine_facts()
    path = save_results(results.assign(**facts), "perftools", args.out, launcher="embedded")
    medians = results.pivot_table(
        index=["shared_memory", "concurrency"],
        columns="tool",
        values=["throughput_infer_per_s", "latency_p50_ms"],
        aggfunc="median",
    )
    gaps = pd.DataFrame(
        {
            key: (medians[column][FALLBACK] - medians[column][PERF_ANALYZER]).abs()
            / medians[column][PERF_ANALYZER]
            for key, column in (
                ("tput_gap", "throughput_infer_per_s"),
                ("p50_gap", "latency_p50_ms"),
            )
        }
    )
    print(f"medians of {args.repeats} runs per tool", medians.round(2).to_string(), sep="\n")
    print("gaps, |fallback - perf_analyzer| / perf_analyzer", gaps.round(3).to_string(), sep="\n")
    print(f"wrote {path}")
    print(headline("gpu-tools", {"tput_gap": gaps.tput_gap.max(), "p50_gap": gaps.p50_gap.max()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
