"""YOLO11n TorchScript on an NVIDIA GPU through the embedded Triton, measured by perf_analyzer.

Two exports of the same network are served by the PyTorch stand-in on ``KIND_GPU``:

* ``naive``: what a first export looks like: float32 [3, 640, 640] in, float32 out;
* ``gpu``: uint8 RGB in (4x fewer bytes through the client, Triton and host-to-device
  copy), normalised and run in float16 on the GPU, float16 [84, 8400] out (half the bytes
  back).

Each is measured by perf_analyzer (tensors in system shared memory) with dynamic batching
off and on over a concurrency sweep, the ``gpu`` model also with 2 GPU instances. Writes a
dated CSV and a short markdown report (device, driver, CUDA, torch, commands) to ``--out``
(default ``docs/results``). ``python -m tools.bench.gpu_tools`` compares perf_analyzer
with the course's fallback generator on the same machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.machine import machine_facts
from helpers.model_config import config_from_dict, render_config
from helpers.paths import REPO_ROOT, build_dir
from helpers.results import load_results, save_results
from tools.bench import CannotRun

INPUT, OUTPUT, SIDE = "INPUT__0", "OUTPUT__0", 640
MAX_BATCH = 32
OUTPUT_BYTES = 84 * 8400 * 4  # one float32 output per request


def export_variant(folder: Path, uint8_half: bool) -> None:
    """Trace YOLO11n (random weights unless yolo11n.pt is found) on CUDA into ``folder``."""
    import torch

    from helpers.yolo import load_yolo

    network = load_yolo("n").model.model.fuse().eval().cuda()
    for module in network.modules():
        if hasattr(module, "export"):
            module.export = True  # Detect head returns the [N, 84, 8400] tensor only

    class Served(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = network.half() if uint8_half else network

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            if uint8_half:
                return self.net(images.half() / 255.0)
            return self.net(images)

    example = torch.zeros(
        1, 3, SIDE, SIDE, device="cuda", dtype=torch.uint8 if uint8_half else torch.float32
    )
    (folder / "1").mkdir(parents=True, exist_ok=True)
    with torch.inference_mode():
        torch.jit.trace(Served().eval(), example, check_trace=False).save(
            str(folder / "1" / "model.pt")
        )
    config = {
        "name": folder.name,
        "platform": "pytorch_libtorch",
        "max_batch_size": MAX_BATCH,
        "input": [
            {
                "name": INPUT,
                "data_type": "TYPE_UINT8" if uint8_half else "TYPE_FP32",
                "dims": [3, SIDE, SIDE],
            }
        ],
        "output": [
            {
                "name": OUTPUT,
                "data_type": "TYPE_FP16" if uint8_half else "TYPE_FP32",
                "dims": [84, 8400],
            }
        ],
        "instance_group": [{"kind": "KIND_GPU", "count": 1}],
    }
    if uint8_half:
        # TorchScript's profiling executor re-specialises for every new batch size that
        # dynamic batching produces; the native libtorch backend has the same switch.
        config["parameters"] = {"DISABLE_OPTIMIZED_EXECUTION": {"string_value": "true"}}
    (folder / "config.pbtxt").write_text(render_config(config))


def inprocess_images_per_s(path: Path, image: np.ndarray, batch: int, seconds: float = 3) -> float:
    """Images/s of the TorchScript file run in this process on the GPU, copies included."""
    import time

    import torch

    module = torch.jit.load(str(path), map_location="cuda").eval()
    host = np.repeat(image, batch, axis=0)
    optimized = image.dtype != np.uint8  # the gpu variant runs with optimized execution off
    with torch.inference_mode(), torch.jit.optimized_execution(optimized):
        for _ in range(5):  # TorchScript's profiling runs
            module(torch.from_numpy(host).cuda()).cpu()
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            module(torch.from_numpy(host).cuda()).cpu()
            done += batch
    return done / (time.perf_counter() - start)


def variant(model: Path, batching: bool, instances: int = 1) -> dict:
    """The model's config with batching on/off, an instance count and a warm-up per batch size.

    ``model_warmup`` makes Triton run one request of every batch size the instance can get
    before the model is READY: the first call at a new batch size loads and picks CUDA
    kernels for it, which otherwise lands inside the measurement as a stall of up to seconds.
    """
    from helpers.model_config import config_to_dict, read_config

    values = config_to_dict(read_config(model))
    values["instance_group"] = [{"kind": "KIND_GPU", "count": instances}]
    sizes = range(1, values["max_batch_size"] + 1) if batching else [1]
    values.pop("dynamic_batching", None)
    if batching:
        values["dynamic_batching"] = {"max_queue_delay_microseconds": 1000}
    values["model_warmup"] = [
        {
            "name": f"batch {size}",
            "batch_size": size,
            "inputs": {
                spec["name"]: {
                    "data_type": spec["data_type"],
                    "dims": spec["dims"],
                    "zero_data": True,
                }
                for spec in values["input"]
            },
        }
        for size in sizes
    ]
    config_from_dict(values)
    return values


def batch_profile(url: str, model: str) -> str:
    """Executions and mean compute time per batch size since the model was loaded."""
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(url) as client:
        stats = client.get_inference_statistics(model, as_json=True)
    parts = []
    for entry in stats["model_stats"]:
        for batch in sorted(entry.get("batch_stats", []), key=lambda b: int(b["batch_size"])):
            infer = batch["compute_infer"]
            count = int(infer.get("count", 0))
            if count:
                mean = int(infer.get("ns", 0)) / count / 1e6
                parts.append(f"{batch['batch_size']}x{count}:{mean:.1f}ms")
    return (
        "executions per batch size since load, warm-up included (size x count: mean compute): "
        + " ".join(parts)
    )


def markdown_table(frame: pd.DataFrame) -> str:
    """A DataFrame as a GitHub markdown table (no extra dependency)."""
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def run(argv: list[str]) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m tools.bench gpu")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--window-ms", type=int, default=3000, help="perf_analyzer window")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "results")
    parser.add_argument("--host", help="label for this machine in the results (default: its name)")
    args = parser.parse_args(argv)

    import torch

    from helpers import perf_analyzer
    from helpers.server import TritonServer

    if shutil.which("nvidia-smi") is None or not torch.cuda.is_available():
        raise CannotRun("no NVIDIA GPU visible (nvidia-smi and torch.cuda) on this machine")
    location = perf_analyzer.find_perf_analyzer(use_docker=False)
    if not location.available:
        raise CannotRun(f"perf_analyzer cannot run here: {location.reason}")
    facts = machine_facts()
    print(json.dumps(facts))

    repository = build_dir("gpu_repository")
    shutil.rmtree(repository)
    models = {"naive": repository / "yolo11n_ts_naive", "gpu": repository / "yolo11n_ts_gpu"}
    export_variant(models["naive"], uint8_half=False)
    export_variant(models["gpu"], uint8_half=True)

    payloads = {
        "naive": np.random.default_rng(0).random((1, 3, SIDE, SIDE), dtype=np.float32),
        "gpu": np.random.default_rng(0).integers(0, 256, (1, 3, SIDE, SIDE), dtype=np.uint8),
    }
    plan = [(name, batching, 1, args.concurrency) for name in models for batching in (False, True)]
    plan.append(("gpu", True, 2, args.concurrency[1:] or args.concurrency))
    columns = [
        "concurrency",
        "throughput_infer_per_s",
        "latency_p50_ms",
        "latency_p99_ms",
        "server_queue_ms",
        "server_compute_input_ms",
        "server_compute_infer_ms",
        "server_compute_output_ms",
    ]
    frames = []
    with TritonServer(repository, startup_timeout=120) as server:
        for name, batching, instances, levels in plan:
            label = f"{name}, batching {'on' if batching else 'off'}, {instances} instance(s)"
            server.load_model(models[name].name, config=variant(models[name], batching, instances))
            rows = []
            for level in levels:  # one at a time: an unstable level is reported, not fatal
                try:
                    rows.append(
                        perf_analyzer.run(
                            models[name].name,
                            [level],
                            url=server.grpc_url,
                            protocol="grpc",
                            shape={INPUT: [3, SIDE, SIDE]},
                            measurement_interval_ms=args.window_ms,
                            shared_memory="system",
                            output_shared_memory_size=OUTPUT_BYTES,
                            extra=["--stability-percentage", "25", "--max-trials", "8"],
                            location=location,
                            results_dir=build_dir("gpu_perf_analyzer"),
                            progress=False,
                        )
                    )
                except perf_analyzer.PerfAnalyzerError as error:
                    print(f"{label}, concurrency {level}: {str(error).splitlines()[-1]}")
            if not rows:
                continue
            frame = pd.concat(rows, ignore_index=True)
            frames.append(
                frame.assign(
                    config=label,
                    model=name,
                    batching=batching,
                    instances=instances,
                    shared_memory="system",
                )
            )
            print(
                f"{label}, perf_analyzer", frame[columns].round(2).to_string(index=False), sep="\n"
            )
            print(batch_profile(server.grpc_url, models[name].name))
        print(server.log_tail(4, containing=["stand-in"]))
    for name, folder in models.items():
        for batch in (1, MAX_BATCH):
            rate = inprocess_images_per_s(folder / "1" / "model.pt", payloads[name], batch)
            print(
                f"in-process {name}, batch {batch}: {rate:.0f} images/s "
                "(torch on the GPU, host-to-device and output copies included)"
            )

    results = pd.concat(frames, ignore_index=True)
    path = save_results(
        results.assign(**facts), "gpu", args.out, launcher="embedded", host=args.host
    )
    results = load_results(path)
    stem = path.stem

    def tput(name: str, batching: bool, instances: int, level: int) -> float:
        rows = results[
            (results.model == name)
            & (results.batching == batching)
            & (results.instances == instances)
            & (results.concurrency == level)
        ]
        return float(rows.throughput_infer_per_s.iloc[0]) if len(rows) else float("nan")

    top = max(args.concurrency)
    figures = {
        "gain": tput("gpu", True, 1, top) / tput("gpu", False, 1, top),
        "instances_gain": tput("gpu", True, 2, top) / tput("gpu", True, 1, top),
        "naive_gain": tput("naive", True, 1, top) / tput("naive", False, 1, top),
        "gpu_ips": tput("gpu", True, 1, top),
        "naive_ips": tput("naive", True, 1, top),
    }
    if len(args.concurrency) > 2:
        middle = sorted(args.concurrency)[-2]
        figures[f"instances_gain_c{middle}"] = tput("gpu", True, 2, middle) / tput(
            "gpu", True, 1, middle
        )
    command = perf_analyzer.build_command(
        "<model>",
        url="127.0.0.1:<grpc port>",
        concurrency=top,
        shape={INPUT: [3, SIDE, SIDE]},
        measurement_interval_ms=args.window_ms,
        shared_memory="system",
        output_shared_memory_size=OUTPUT_BYTES,
        csv_path="<file>.csv",
        extra=["--stability-percentage", "25", "--max-trials", "8"],
        prefix=("perf_analyzer",),
    )
    table = results[["config", "tool", "shared_memory", *columns]].round(2)
    (args.out / f"{stem}.md").write_text(
        f"# YOLO11n TorchScript on {facts['device']}, {results.date.iloc[0]}\n\n"
        "Measured by `python -m tools.bench gpu`: embedded Triton 2.51.0 (nvidia-pytriton "
        "0.7.0), the course's PyTorch stand-in backend, KIND_GPU.\n\n"
        + "\n".join(f"- {key}: {value}" for key, value in facts.items())
        + f"\n- perf_analyzer: {location.reason}\n- command: `{' '.join(command)}`\n\n"
        "`naive`: float32 input and output. `gpu`: uint8 input normalised on the GPU, float16 "
        "compute and output. Latencies in ms; server columns are per request.\n\n"
        + markdown_table(table)
        + "\n\nHeadline: "
        + " ".join(f"{k}={v:.3g}" for k, v in figures.items())
        + "\n"
    )
    print(f"wrote {args.out / stem}.csv and .md")
    return figures
