"""perf_analyzer vs the course's fallback generator, same model, server and transport, on a GPU.

Notebook 05 measures with the fallback generator wherever perf_analyzer cannot run (its
wheel needs glibc >= 2.38). This checks how far the two tools' figures are apart: the
``gpu`` YOLO11n export with dynamic batching on one GPU instance, at each concurrency,
over system shared memory and over plain gRPC, the two tools taking turns ``--repeats``
times so that drift of the machine hits both alike. Prints each run, the medians per tool
and the gaps (|fallback - perf_analyzer| / perf_analyzer), writes a dated CSV
(``perftools-<host>-<date>.csv``) to ``--out``, and as its last line
``gpu-tools: tput_gap=... p50_gap=...`` (the largest gaps over all points).

Run it on a GPU machine: ``python -m tools.bench.gpu_tools [--concurrency 1 8 32]``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.loadgen import Payload, measure
from helpers.paths import REPO_ROOT, build_dir
from helpers.results import save_results
from tools.bench import headline
from tools.bench.gpu import (
    INPUT,
    OUTPUT_BYTES,
    SIDE,
    STABILITY,
    export_variant,
    machine_facts,
    variant,
)
from tools.bench.shm import shm_target

FALLBACK, PERF_ANALYZER = "fallback generator", "perf_analyzer"


def summary(results: pd.DataFrame) -> pd.DataFrame:
    """Per transport and concurrency: each tool's median and range, and the gaps of the medians."""
    rows = []
    for (memory, level), runs in results.groupby(["shared_memory", "concurrency"]):
        row: dict[str, object] = {"shared_memory": memory, "concurrency": level}
        for tool, short in ((PERF_ANALYZER, "pa"), (FALLBACK, "fb")):
            mine = runs[runs.tool == tool]
            tput, p50 = mine.throughput_infer_per_s, mine.latency_p50_ms
            row[f"{short}_infer_per_s"] = tput.median()
            row[f"{short}_range"] = f"{tput.min():.0f}-{tput.max():.0f}"
            row[f"{short}_p50_ms"] = p50.median()
        row["tput_gap"] = abs(row["fb_infer_per_s"] - row["pa_infer_per_s"]) / row["pa_infer_per_s"]
        row["p50_gap"] = abs(row["fb_p50_ms"] - row["pa_p50_ms"]) / row["pa_p50_ms"]
        rows.append(row)
    return pd.DataFrame(rows)


def write_report(csv: Path) -> Path:
    """Write ``<csv stem>.md`` beside a CSV this benchmark saved: machine, medians, gaps."""
    from tools.bench.gpu import markdown_table

    results = pd.read_csv(csv)
    first = results.iloc[0]
    runs = int(results.groupby(["shared_memory", "concurrency", "tool"]).size().min())
    facts = "\n".join(
        f"- {key}: {first[key]}" for key in ("device", "driver", "cuda", "torch", "python", "host")
    )
    path = csv.with_suffix(".md")
    path.write_text(
        f"# perf_analyzer vs the fallback generator on {first['device']}, {first['date'][:10]}\n\n"
        "Measured by `python -m tools.bench.gpu_tools`: the `gpu` YOLO11n export (uint8 in, "
        "float16) served by the embedded Triton with dynamic batching on one GPU instance; "
        f"at each point the two tools took turns, {runs} runs each.\n\n{facts}\n\n"
        "`pa`: perf_analyzer, `fb`: the fallback generator (helpers.loadgen); medians of the "
        "runs, the range of each tool's throughput, and the gaps |fb - pa| / pa of the "
        "medians.\n\n" + markdown_table(summary(results).round(3)) + "\n"
    )
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.gpu_tools")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--window-ms", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--report", type=Path, help="only write the .md of a saved CSV")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "results")
    parser.add_argument("--host", help="label for this machine in the results (default: its name)")
    args = parser.parse_args(argv)
    if args.report:
        print(f"wrote {write_report(args.report)}")
        return 0

    from helpers import perf_analyzer
    from helpers.server import TritonServer

    location = perf_analyzer.find_perf_analyzer(use_docker=False)
    if not location.available:
        print(f"cannot run here: {location.reason}", file=sys.stderr)
        return 3
    repository = build_dir("gpu_tools_repository")
    shutil.rmtree(repository)
    model = repository / "yolo11n_ts_gpu"
    export_variant(model, "gpu")
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
                            extra=STABILITY,
                            location=location,
                            results_dir=build_dir("gpu_perf_analyzer"),
                            progress=False,
                        ).iloc[0]
                        ran.append(measured.to_dict() | {"shared_memory": memory})
                    except perf_analyzer.PerfAnalyzerError as error:
                        print(f"perf_analyzer, c{level}, {memory}: {str(error).splitlines()[-1]}")
                    target = shm_target(
                        server.grpc_url, model.name, Payload({INPUT: image}), memory
                    )
                    row = measure(
                        target,
                        level,
                        warmup_s=2,
                        window_s=args.window_ms / 1000,
                        max_windows=8,
                        stop_on_error=True,
                    )
                    ran.append(row | {"tool": FALLBACK, "shared_memory": memory})
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
    path = save_results(
        results.assign(**facts), "perftools", args.out, launcher="embedded", host=args.host
    )
    table = summary(results)
    print(table.round(3).to_string(index=False))
    report = write_report(path)
    print(f"wrote {path} and {report.name}")
    print(headline("gpu-tools", {"tput_gap": table.tput_gap.max(), "p50_gap": table.p50_gap.max()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
