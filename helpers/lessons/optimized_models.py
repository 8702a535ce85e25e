# Generated from notebooks/02_tensorrt_engine_builds.ipynb by `make export`: do not edit.
# Edit the cells marked `#| export optimized_models` there, then run `make export`.


# ---- cell trt-build-engine
from pathlib import Path


def build_engine(
    onnx_file: Path,
    plan_file: Path,
    profile: dict[str, list[int]],
    fp16: bool,
    timing_cache: Path,
    layer_info: Path,
    input_name: str = "images",
) -> Path:
    """Build a plan with the ``tensorrt`` package's builder API, as trtexec does (GPU needed).

    ``profile`` is ``{"min": [1, 3, 640, 640], "opt": [...], "max": [...]}``. ``fp16`` sets
    TensorRT 10's FP16 flag; TensorRT 11 has none, so there ``onnx_file`` is the FP16 ONNX.
    """
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode since TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_file)):
        errors = "\n".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_file}:\n{errors}")
    config = builder.create_builder_config()
    if fp16 and int(trt.__version__.split(".")[0]) < 11:
        config.set_flag(trt.BuilderFlag.FP16)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # layer JSON with precisions
    shapes = builder.create_optimization_profile()
    shapes.set_shape(input_name, profile["min"], profile["opt"], profile["max"])
    config.add_optimization_profile(shapes)
    cache = Path(timing_cache).read_bytes() if Path(timing_cache).exists() else b""
    config.set_timing_cache(config.create_timing_cache(cache), False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build {plan_file} (see the messages above)")
    Path(plan_file).parent.mkdir(parents=True, exist_ok=True)
    Path(plan_file).write_bytes(bytes(serialized))
    Path(timing_cache).write_bytes(bytes(config.get_timing_cache().serialize()))
    engine = trt.Runtime(logger).deserialize_cuda_engine(bytes(serialized))
    inspector = engine.create_engine_inspector()
    Path(layer_info).write_text(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    print(f"TensorRT version: {trt.__version__}")
    return Path(plan_file)


# ---- cell trt-summary
import re

SUMMARY_HEADER = "=== Performance summary ==="
NUMBER = r"[-+]?[\d.]+(?:[eE][-+]?\d+)?"
THROUGHPUT = re.compile(rf"\]\s*Throughput:\s+(?P<value>{NUMBER})\s+qps")
STAT_LINE = re.compile(r"\]\s*(?P<metric>[A-Za-z0-9/ ]+?):\s+(?P<body>min\s*=.*)$")
STAT_ITEM = re.compile(
    r"(?P<key>min|max|mean|median|percentile\((?P<pct>[\d.]+)%\))\s*=\s*"
    rf"(?P<value>{NUMBER})\s*(?P<unit>ms|us|s)\b"
)
TO_MS = {"ms": 1.0, "us": 1e-3, "s": 1e3}


def parse_performance_summary(text: str) -> dict[str, float]:
    """trtexec's ``=== Performance summary ===`` block as one flat row.

    ``throughput_qps`` counts inferences (batches) per second; then ``<metric>_<stat>_ms`` for
    each metric (``latency``, ``enqueue_time``, ``h2d_latency``, ``gpu_compute_time``,
    ``d2h_latency``) and statistic (``min``, ``max``, ``mean``, ``median``, ``pNN``), in ms.
    TensorRT 8 prints only ``percentile(99%)``, later versions 90, 95 and 99.
    """
    start = text.rfind(SUMMARY_HEADER)
    if start < 0:
        raise ValueError(
            f"no '{SUMMARY_HEADER}' in the trtexec output: it was a build-only run "
            "(--skipInference) or trtexec failed before the benchmark; see the log"
        )
    row: dict[str, float] = {}
    for line in text[start:].splitlines()[1:]:
        if "&&&&" in line:  # "&&&& PASSED TensorRT.trtexec ..." closes the run
            break
        if (match := THROUGHPUT.search(line)) is not None:
            row["throughput_qps"] = float(match["value"])
        elif (match := STAT_LINE.search(line)) is not None:
            metric = re.sub(r"[^a-z0-9]+", "_", match["metric"].lower())  # GPU Compute Time
            for item in STAT_ITEM.finditer(match["body"]):
                pct = item["pct"]
                if pct is not None and "." in pct:
                    pct = pct.rstrip("0").rstrip(".")  # 99.90 -> 99.9, 99.0 -> 99
                stat = item["key"] if pct is None else f"p{pct}"
                row[f"{metric}_{stat}_ms"] = float(item["value"]) * TO_MS[item["unit"]]
    if "throughput_qps" not in row:
        raise ValueError("the trtexec performance summary has no 'Throughput: ... qps' line")
    return row


# ---- cell trt-layers
import json
import re
from pathlib import Path

import pandas as pd

DATATYPE_KEYS = ("DataType", "Format/Datatype", "Format/DataType", "Format")  # 11, 8-10, ...
COLUMNS = ["name", "layer_type", "precision", "onnx_layers", "output_shape"]
ONNX_LAYER = re.compile(r"\[ONNX Layer: [^\]]+\]")  # one per ONNX node fused into the layer
BINDING = re.compile(
    r"(?P<mode>input|output) binding for (?P<name>\S+) with dimensions (?P<dims>[\dx]+)"
    r"(?: and type (?P<dtype>\w+))?",
    re.IGNORECASE,
)
PRECISION_NAMES = [  # in this order: "bfloat16" contains "float", "uint8" contains "int8"
    ("bf16", ("bfloat16", "bf16")),
    ("fp8", ("fp8",)),
    ("fp16", ("half", "fp16")),
    ("uint8", ("uint8",)),
    ("int8", ("int8",)),
    ("int32", ("int32",)),
    ("int64", ("int64",)),
    ("bool", ("bool",)),
    ("fp32", ("float", "fp32")),
]


def precision_of(datatype: str | None) -> str:
    """``Half``, ``Row major linear FP32``, ... -> ``fp16``, ``fp32``, ... (TensorRT 8.x to 11)."""
    text = (datatype or "").lower()
    matches = (name for name, words in PRECISION_NAMES if any(word in text for word in words))
    return next(matches, "unknown")


def parse_layer_info(source: str | Path) -> pd.DataFrame:
    """One row per layer of ``--exportLayerInfo`` / ``EngineInspector`` JSON (a path or the text).

    Built with ``--profilingVerbosity=detailed``, each layer lists its type, its tensors with
    their datatype and the ONNX nodes fused into it; otherwise TensorRT writes names only.
    """
    text = source if str(source).lstrip().startswith("{") else Path(source).read_text()
    rows = []
    for layer in json.loads(text).get("Layers", []):
        if isinstance(layer, str):  # profilingVerbosity=layer_names_only
            rows.append({"name": layer, "layer_type": "unknown", "precision": "unknown"})
            continue
        tensor = (layer.get("Outputs", []) or layer.get("Inputs", []) or [{}])[0]
        datatype = next((tensor[key] for key in DATATYPE_KEYS if key in tensor), None)
        rows.append(
            {
                "name": layer.get("Name", ""),
                "layer_type": layer.get("LayerType", "unknown"),
                "precision": precision_of(datatype),  # of its first output
                "onnx_layers": len(ONNX_LAYER.findall(str(layer.get("Metadata", "")))),
                "output_shape": tuple(tensor.get("Dimensions", ())),
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def parse_io_bindings(log: str) -> pd.DataFrame:
    """The ``Input/Output binding for <name> with dimensions ...`` lines of a trtexec log."""
    rows = {}
    for match in BINDING.finditer(log):
        dims = tuple(int(d) for d in match["dims"].split("x"))
        rows.setdefault((match["mode"].lower(), match["name"]), (dims, match["dtype"]))
    return pd.DataFrame(
        [{"name": n, "mode": m, "shape": s, "dtype": d} for (m, n), (s, d) in rows.items()],
        columns=["name", "mode", "shape", "dtype"],
    )


# ---- cell 52
from dataclasses import dataclass

import numpy as np

from helpers.lessons.yolo_decode import decode
from helpers.yolo import box_iou


@dataclass(frozen=True)
class Tolerance:
    """How far a variant's output may be from the FP32 model's: boxes in network-input pixels,
    scores in 0-1. ``box_max_px=None`` leaves the largest box error unbounded (anchors scoring
    near zero can move a lot without changing any detection)."""

    box_mean_px: float
    score_max: float
    box_max_px: float | None = None


# Checked by tests/test_ort_optimize.py on the course's CI model (random weights). Graph rewrites
# only reorder float arithmetic (measured: max box error ~0.005 px); dynamic INT8 quantises every
# Conv (measured: mean box error ~1.5 px, max score error ~0.04). Check INT8 again on yours.
TOLERANCES = {
    "ortopt": Tolerance(box_mean_px=0.001, score_max=1e-5, box_max_px=0.05),
    "int8_dynamic": Tolerance(box_mean_px=3.0, score_max=0.1),
}


def within_tolerance(comparison: dict, tolerance: Tolerance) -> bool:
    """True when a ``compare_outputs`` result is inside ``tolerance``."""
    return (
        comparison["mean_abs_box_px"] <= tolerance.box_mean_px
        and comparison["max_abs_score"] <= tolerance.score_max
        and (tolerance.box_max_px is None or comparison["max_abs_box_px"] <= tolerance.box_max_px)
    )


def count_matches(ref_detections, other_detections, iou: float) -> int:
    """Greedy one-to-one matches between two ``decode`` results: same class and IoU >= ``iou``."""
    others = list(zip(other_detections[0], other_detections[2], strict=True))  # (box, class)
    used, matched = set(), 0
    for box, cls in zip(ref_detections[0], ref_detections[2], strict=True):
        candidates = [
            (box_iou(box, other_box), j)
            for j, (other_box, other_cls) in enumerate(others)
            if j not in used and other_cls == cls
        ]
        best_iou, best = max(candidates, default=(0.0, None))
        if best is not None and best_iou >= iou:
            used.add(best)
            matched += 1
    return matched


def compare_outputs(reference, other, conf=0.25, iou=0.5, top_k=100) -> dict[str, float]:
    """How close ``other`` is to ``reference`` (``[N, 4 + classes, anchors]`` outputs).

    Box and score differences; detections after ``decode`` at ``conf`` and the share that match
    (NaN when neither model detects anything); and the share of the reference's ``top_k`` best
    anchors also in the other's, with the same class: it says something even when random
    weights leave every score below ``conf``.
    """
    reference = np.asarray(reference, dtype=np.float32)
    other = np.asarray(other, dtype=np.float32)
    if reference.shape != other.shape:
        raise ValueError(f"output shapes differ: {reference.shape} vs {other.shape}")
    n_ref = n_other = matched = top_hits = 0
    for ref_image, other_image in zip(reference, other, strict=True):
        ref_detections, other_detections = decode(ref_image, conf), decode(other_image, conf)
        n_ref += len(ref_detections[1])
        n_other += len(other_detections[1])
        matched += count_matches(ref_detections, other_detections, iou)
        ref_scores, other_scores = ref_image[4:], other_image[4:]
        ref_top = np.argsort(-ref_scores.max(0), kind="stable")[:top_k]
        other_top = set(np.argsort(-other_scores.max(0), kind="stable")[:top_k].tolist())
        same_class = ref_scores.argmax(0) == other_scores.argmax(0)
        top_hits += sum(1 for a in ref_top if a in other_top and same_class[a])
    box_error = np.abs(reference[:, :4] - other[:, :4])
    return {
        "max_abs_box_px": float(box_error.max()),
        "mean_abs_box_px": float(box_error.mean()),
        "max_abs_score": float(np.abs(reference[:, 4:] - other[:, 4:]).max()),
        "detections_ref": n_ref,
        "detections_other": n_other,
        "detection_agreement": matched / max(n_ref, n_other) if n_ref or n_other else float("nan"),
        "top_k_anchor_agreement": top_hits / (top_k * len(reference)),
    }
