"""Read what TensorRT tells about an engine: trtexec's logs and layer JSON (introduced in notebook 02).

- ``parse_performance_summary``: the ``=== Performance summary ===`` block that ``trtexec``
  prints after a benchmark run (throughput, latency min/mean/median/percentiles, enqueue,
  H2D, GPU compute, D2H) as a ``TrtexecSummary`` with a tidy DataFrame.
- ``parse_build_info`` / ``parse_io_bindings``: the TensorRT version, GPU and compute
  capability, and the I/O bindings that ``trtexec`` logs (recorded next to the plan).
- ``parse_layer_info``: the JSON written by ``--exportLayerInfo=<file>`` (built with
  ``--profilingVerbosity=detailed``) or by the ``tensorrt`` package's ``EngineInspector``:
  one row per fused layer with its type and precision.
- ``inspect_engine``: the same through the ``tensorrt`` Python package, when it is there.

The summary format is trtexec's own (TensorRT 8.x to 11.x print the same lines), e.g.::

    [I] === Performance summary ===
    [I] Throughput: 1234.5 qps
    [I] Latency: min = 1.1 ms, max = 2.3 ms, mean = 1.2 ms, median = 1.2 ms, percentile(90%) = ...

TensorRT 8.x prints only ``percentile(99%)``; later versions print 90, 95 and 99 (set with
``--percentile``). Every percentile found becomes a ``pNN_ms`` column.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

#: The line that opens trtexec's benchmark summary.
SUMMARY_HEADER = "=== Performance summary ==="

# Statistic lines: "<Metric>: min = 1.2 ms, max = ..., percentile(99%) = 3.4 ms".
_STAT_LINE = re.compile(r"\]\s*(?P<metric>[A-Za-z0-9/ ]+?):\s+(?P<body>min\s*=.*)$")
_STAT_ITEM = re.compile(
    r"(?P<key>min|max|mean|median|percentile\((?P<pct>[\d.]+)%\))\s*=\s*"
    r"(?P<value>[-+]?[\d.]+(?:[eE][-+]?\d+)?)\s*(?P<unit>ms|us|s)\b"
)
_THROUGHPUT = re.compile(r"\]\s*Throughput:\s+(?P<value>[-+]?[\d.]+(?:[eE][-+]?\d+)?)\s+qps")
_TOTAL = re.compile(
    r"\]\s*Total (?P<what>Host Walltime|GPU Compute Time):\s+"
    r"(?P<value>[-+]?[\d.]+(?:[eE][-+]?\d+)?)\s*(?P<unit>ms|us|s)\b"
)
_WARNING = re.compile(r"\[W\]\s*(?P<text>.*\S)")
_TRT_VERSION_LINE = re.compile(r"TensorRT version:\s*(?P<version>\d+(?:\.\d+)*)")
_TRT_VERSION_TAG = re.compile(r"\[TensorRT v(?P<digits>\d+)\]")
_DEVICE = re.compile(r"Selected Device:\s*(?P<name>.*\S)")
_COMPUTE_CAPABILITY = re.compile(r"Compute Capability:\s*(?P<cc>\d+\.\d+)")
_BINDING = re.compile(
    r"(?:Created )?(?P<mode>input|output) binding for (?P<name>\S+) with dimensions "
    r"(?P<dims>[\dx]+)(?: and type (?P<dtype>\w+))?",
    re.IGNORECASE,
)
_ONNX_LAYER = re.compile(r"\[ONNX Layer: (?P<name>[^\]]+)\]")

_TO_MS = {"ms": 1.0, "us": 1e-3, "s": 1e3}
_TO_S = {"s": 1.0, "ms": 1e-3, "us": 1e-6}


@dataclass
class TrtexecSummary:
    """trtexec's performance summary for one run (introduced in notebook 02).

    ``throughput_qps`` counts inferences (one inference = one batch of the ``--shapes`` batch
    size) per second; ``stats`` has one row per metric (``latency``, ``enqueue_time``,
    ``h2d_latency``, ``gpu_compute_time``, ``d2h_latency``) and columns ``min_ms``,
    ``mean_ms``, ``median_ms``, ``max_ms`` and ``pNN_ms`` for each percentile printed.
    """

    throughput_qps: float
    stats: pd.DataFrame
    total_host_walltime_s: float | None = None
    total_gpu_compute_s: float | None = None
    warnings: list[str] = field(default_factory=list)

    def row(self, **labels: Any) -> dict[str, Any]:
        """One flat dict (labels first) for a comparison table across runs (notebook 02)."""
        row: dict[str, Any] = dict(labels)
        row["throughput_qps"] = self.throughput_qps
        for metric, values in self.stats.iterrows():
            for column, value in values.items():
                if pd.notna(value):
                    row[f"{metric}_{column}"] = float(value)
        return row


def _metric_key(name: str) -> str:
    """'GPU Compute Time' -> 'gpu_compute_time'."""
    return re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")


def _stat_column(key: str, pct: str | None) -> str:
    if pct is None:
        return f"{key}_ms"
    pct = pct.rstrip("0").rstrip(".") if "." in pct else pct
    return f"p{pct}_ms"


def parse_performance_summary(text: str) -> TrtexecSummary:
    """Parse trtexec's ``=== Performance summary ===`` block into a ``TrtexecSummary`` (notebook 02).

    Raises ``ValueError`` when the block is missing (a ``--skipInference`` build, or a run
    that failed before timing) or has no throughput line.
    """
    start = text.rfind(SUMMARY_HEADER)
    if start < 0:
        raise ValueError(
            f"no '{SUMMARY_HEADER}' in the trtexec output: it was a build-only run "
            "(--skipInference) or trtexec failed before the benchmark; see the log"
        )
    lines = text[start:].splitlines()[1:]
    throughput = None
    rows: dict[str, dict[str, float]] = {}
    totals: dict[str, float] = {}
    warnings = []
    for line in lines:
        if "&&&&" in line:  # "&&&& PASSED TensorRT.trtexec ..." closes the run
            break
        if (match := _THROUGHPUT.search(line)) is not None:
            throughput = float(match["value"])
        elif (match := _TOTAL.search(line)) is not None:
            totals[match["what"]] = float(match["value"]) * _TO_S[match["unit"]]
        elif (match := _STAT_LINE.search(line)) is not None:
            values = {
                _stat_column(item["key"].split("(")[0], item["pct"]): float(item["value"])
                * _TO_MS[item["unit"]]
                for item in _STAT_ITEM.finditer(match["body"])
            }
            rows[_metric_key(match["metric"])] = values
        elif (match := _WARNING.search(line)) is not None:
            warnings.append(match["text"])
    if throughput is None:
        raise ValueError("the trtexec performance summary has no 'Throughput: ... qps' line")
    stats = pd.DataFrame.from_dict(rows, orient="index")
    fixed = [c for c in ("min_ms", "mean_ms", "median_ms", "max_ms") if c in stats.columns]
    percentiles = sorted(
        (c for c in stats.columns if c.startswith("p")), key=lambda c: float(c[1:-3])
    )
    stats = stats[fixed + percentiles]
    stats.index.name = "metric"
    return TrtexecSummary(
        throughput_qps=throughput,
        stats=stats,
        total_host_walltime_s=totals.get("Host Walltime"),
        total_gpu_compute_s=totals.get("GPU Compute Time"),
        warnings=warnings,
    )


def tensorrt_version_from_tag(digits: str) -> str:
    """``'101600'`` -> ``'10.16.0'``, ``'8601'`` -> ``'8.6.1'`` (trtexec's ``[TensorRT vNNNN]``; notebook 02)."""
    if len(digits) >= 6:  # TensorRT 10+: MMmmpp, major may have one or two digits
        major, minor, patch = digits[:-4], digits[-4:-2], digits[-2:]
    elif len(digits) == 4:  # TensorRT 8.x: Mmpp
        major, minor, patch = digits[0], digits[1], digits[2:]
    else:
        raise ValueError(f"unexpected TensorRT version tag v{digits}")
    return f"{int(major)}.{int(minor)}.{int(patch)}"


def parse_build_info(text: str) -> dict[str, str | None]:
    """TensorRT version, GPU name and compute capability from a trtexec log (notebook 02)."""
    version = None
    if (match := _TRT_VERSION_LINE.search(text)) is not None:
        version = match["version"]
    elif (match := _TRT_VERSION_TAG.search(text)) is not None:
        version = tensorrt_version_from_tag(match["digits"])
    device = _DEVICE.search(text)
    capability = _COMPUTE_CAPABILITY.search(text)
    return {
        "tensorrt_version": version,
        "gpu_name": device["name"] if device else None,
        "compute_capability": capability["cc"] if capability else None,
    }


def parse_io_bindings(text: str) -> pd.DataFrame:
    """The ``Input/Output binding for <name> with dimensions ...`` lines of a trtexec log (notebook 02)."""
    rows = []
    seen = set()
    for match in _BINDING.finditer(text):
        key = (match["mode"].lower(), match["name"])
        if key in seen:
            continue
        seen.add(key)
        rows.append(
            {
                "name": match["name"],
                "mode": match["mode"].lower(),
                "shape": tuple(int(d) for d in match["dims"].split("x")),
                "dtype": match["dtype"],
            }
        )
    return pd.DataFrame(rows, columns=["name", "mode", "shape", "dtype"])


def precision_of(datatype: str | None) -> str:
    """Map a TensorRT format/datatype string to ``fp32``, ``fp16``, ``int8``, ... (notebook 02).

    Handles TensorRT 10+ names (``Float``, ``Half``, ``Int8``, ``BFloat16``) and TensorRT 8.x
    format descriptions (``Row major linear FP32``, ``Channel major FP16 format ...``).
    """
    if not datatype:
        return "unknown"
    text = datatype.lower()
    checks = [
        ("bf16", ("bfloat16", "bf16")),
        ("fp8", ("fp8",)),
        ("fp16", ("half", "fp16")),
        ("int8", ("int8",)),
        ("int32", ("int32",)),
        ("int64", ("int64",)),
        ("bool", ("bool",)),
        ("uint8", ("uint8",)),
        ("fp32", ("float", "fp32")),
    ]
    for name, needles in checks:
        if any(n in text for n in needles):
            if name == "int8" and "uint8" in text:
                return "uint8"
            return name
    return "unknown"


def _tensor_datatype(tensor: dict[str, Any]) -> str | None:
    """Datatype of one tensor entry: TensorRT 11 splits 'Format/DataType' into 'DataType'."""
    for key in ("DataType", "Format/Datatype", "Format/DataType", "Format"):
        if key in tensor:
            return str(tensor[key])
    return None


@dataclass
class LayerInfo:
    """An engine's layers and I/O tensors as TensorRT reports them (introduced in notebook 02)."""

    layers: pd.DataFrame
    io_tensors: pd.DataFrame

    def precision_counts(self) -> pd.Series:
        """How many layers run in each precision (notebook 02)."""
        return self.layers["precision"].value_counts().rename("layers")


def parse_layer_info(source: str | os.PathLike[str] | dict[str, Any]) -> LayerInfo:
    """Parse ``--exportLayerInfo`` / ``EngineInspector`` JSON (a path, a JSON string or a dict) (notebook 02).

    With ``--profilingVerbosity=detailed`` each layer is an object (name, type, inputs,
    outputs with their datatype, tactic); without it TensorRT writes layer names only, and
    the type and precision columns say ``unknown``. ``Bindings`` (TensorRT 8-10) or
    ``I/O Tensors`` (TensorRT 11) become ``io_tensors``.
    """
    if isinstance(source, dict):
        data = source
    elif isinstance(source, str) and source.lstrip().startswith("{"):
        data = json.loads(source)
    else:
        data = json.loads(Path(source).read_text())
    rows = []
    for layer in data.get("Layers", []):
        if isinstance(layer, str):  # profilingVerbosity=layer_names_only
            rows.append({"name": layer, "layer_type": "unknown", "precision": "unknown"})
            continue
        inputs = layer.get("Inputs", [])
        outputs = layer.get("Outputs", [])
        reference = outputs[0] if outputs else (inputs[0] if inputs else {})
        onnx_layers = _ONNX_LAYER.findall(str(layer.get("Metadata", "")))
        rows.append(
            {
                "name": layer.get("Name", ""),
                "layer_type": layer.get("LayerType", "unknown"),
                "precision": precision_of(_tensor_datatype(reference)),
                "inputs": ", ".join(t.get("Name", "") for t in inputs),
                "outputs": ", ".join(t.get("Name", "") for t in outputs),
                "output_shape": tuple(reference.get("Dimensions", ())),
                "onnx_layers": len(onnx_layers),
                "tactic": layer.get("TacticName", ""),
            }
        )
    columns = [
        "name",
        "layer_type",
        "precision",
        "inputs",
        "outputs",
        "output_shape",
        "onnx_layers",
        "tactic",
    ]
    layers = pd.DataFrame(rows).reindex(columns=columns)
    io_rows = []
    for tensor in data.get("I/O Tensors", []):  # TensorRT 11
        io_rows.append(
            {
                "name": tensor.get("Name"),
                "mode": str(tensor.get("IOMode", "")).lower() or None,
                "dtype": precision_of(_tensor_datatype(tensor)),
                "shape": tuple(tensor.get("Dimensions", ())),
            }
        )
    for name in data.get("Bindings", []):  # TensorRT 8-10: names only
        io_rows.append({"name": name, "mode": None, "dtype": None, "shape": None})
    io_tensors = pd.DataFrame(io_rows, columns=["name", "mode", "dtype", "shape"])
    return LayerInfo(layers=layers, io_tensors=io_tensors)


def inspect_engine(plan: str | os.PathLike[str]) -> LayerInfo:
    """Layers and I/O tensors of a plan through the ``tensorrt`` package (GPU needed; notebook 02).

    Uses ``EngineInspector`` (detailed only if the engine was built with
    ``ProfilingVerbosity.DETAILED``) and the engine's tensor API for the I/O table, including
    each input's min/opt/max profile shapes.
    """
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    engine = trt.Runtime(logger).deserialize_cuda_engine(Path(plan).read_bytes())
    if engine is None:
        raise RuntimeError(
            f"TensorRT {trt.__version__} could not load {plan}: engines only load on the GPU "
            "model and TensorRT version they were built with (see the .json sidecar)"
        )
    inspector = engine.create_engine_inspector()
    info = parse_layer_info(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    io_rows = []
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        row = {
            "name": name,
            "mode": "input" if is_input else "output",
            "dtype": precision_of(str(engine.get_tensor_dtype(name)).split(".")[-1]),
            "shape": tuple(engine.get_tensor_shape(name)),
        }
        if is_input:
            low, opt, high = engine.get_tensor_profile_shape(name, 0)
            row.update(min_shape=tuple(low), opt_shape=tuple(opt), max_shape=tuple(high))
        io_rows.append(row)
    return LayerInfo(layers=info.layers, io_tensors=pd.DataFrame(io_rows))
