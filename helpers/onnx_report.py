"""What is inside an exported ONNX file, as dataclasses and DataFrames (introduced in notebook 01).

The facts a ``check_onnx.py`` script would print: does ``onnx.checker`` accept it, IR
version, producer, opset imports, inputs and outputs (names, dtypes, shapes with symbolic
dimensions), which operators the graph uses and how often, parameter count, file size.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
import pandas as pd
from tqdm.auto import tqdm

from helpers.loadgen import percentiles

if TYPE_CHECKING:
    import onnxruntime


@dataclass(frozen=True)
class OnnxFacts:
    """Headline facts about one ONNX file (introduced in notebook 01)."""

    path: Path
    checker_passed: bool
    checker_message: str
    ir_version: int
    producer: str
    opset_imports: dict[str, int]
    node_count: int
    parameter_count: int
    file_size_bytes: int
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def opset(self) -> int:
        """The default-domain (``ai.onnx``) opset."""
        return self.opset_imports.get("ai.onnx", 0)

    def frame(self) -> pd.DataFrame:
        """The facts as a two-column table for display."""
        rows = {
            "file": str(self.path),
            "onnx.checker (full_check)": "passed" if self.checker_passed else self.checker_message,
            "IR version": self.ir_version,
            "producer": self.producer,
            "opset imports": ", ".join(f"{d} {v}" for d, v in self.opset_imports.items()),
            "nodes": self.node_count,
            "parameters": f"{self.parameter_count:,}",
            "file size": f"{self.file_size_bytes / 2**20:.1f} MiB ({self.file_size_bytes:,} bytes)",
        }
        return pd.DataFrame({"fact": list(rows), "value": [str(v) for v in rows.values()]})


def _proto(model: str | os.PathLike[str] | onnx.ModelProto) -> onnx.ModelProto:
    """An ``onnx.ModelProto`` from a path or a proto (introduced in notebook 01)."""
    return model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))


def run_checker(path: str | os.PathLike[str]) -> tuple[bool, str]:
    """``onnx.checker.check_model(full_check=True)`` as ``(passed, message)`` (notebook 01)."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        return False, str(error).strip().splitlines()[0]
    return True, "passed"


def onnx_facts(path: str | os.PathLike[str]) -> OnnxFacts:
    """Check and summarise one ONNX file (introduced in notebook 01)."""
    path = Path(path)
    proto = _proto(path)
    passed, message = run_checker(path)
    return OnnxFacts(
        path=path,
        checker_passed=passed,
        checker_message=message,
        ir_version=int(proto.ir_version),
        producer=f"{proto.producer_name} {proto.producer_version}".strip(),
        opset_imports={(o.domain or "ai.onnx"): int(o.version) for o in proto.opset_import},
        node_count=len(proto.graph.node),
        parameter_count=parameter_count(proto),
        file_size_bytes=path.stat().st_size,
        metadata={p.key: p.value for p in proto.metadata_props},
    )


def dims(value: onnx.ValueInfoProto) -> list[int | str]:
    """A tensor's shape: ints for fixed dimensions, names for symbolic ones (notebook 01)."""
    shape = value.type.tensor_type.shape
    return [d.dim_param if d.HasField("dim_param") else int(d.dim_value) for d in shape.dim]


def io_frame(model: str | os.PathLike[str] | onnx.ModelProto) -> pd.DataFrame:
    """Graph inputs and outputs: role, name, dtype, shape, symbolic dims (notebook 01)."""
    proto = _proto(model)
    initializers = {i.name for i in proto.graph.initializer}
    rows = []
    for role, values in (("input", proto.graph.input), ("output", proto.graph.output)):
        for value in values:
            if value.name in initializers:  # old exporters listed weights as inputs
                continue
            shape = dims(value)
            rows.append(
                {
                    "role": role,
                    "name": value.name,
                    "dtype": np.dtype(
                        onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
                    ).name,
                    "shape": "[" + ", ".join(str(d) for d in shape) + "]",
                    "symbolic_dims": [d for d in shape if isinstance(d, str)],
                }
            )
    return pd.DataFrame(rows, columns=["role", "name", "dtype", "shape", "symbolic_dims"])


def operator_counts(model: str | os.PathLike[str] | onnx.ModelProto) -> pd.DataFrame:
    """Operator types in the main graph with their counts, most frequent first (notebook 01)."""
    proto = _proto(model)
    counts = Counter((n.domain or "ai.onnx", n.op_type) for n in proto.graph.node)
    rows = [{"op_type": op, "domain": domain, "count": c} for (domain, op), c in counts.items()]
    frame = pd.DataFrame(rows, columns=["op_type", "domain", "count"])
    return frame.sort_values(["count", "op_type"], ascending=[False, True], ignore_index=True)


def parameter_count(model: str | os.PathLike[str] | onnx.ModelProto) -> int:
    """Number of values stored in the graph's initializers (weights and biases) (notebook 01)."""
    proto = _proto(model)
    return int(sum(int(np.prod(i.dims, dtype=np.int64)) for i in proto.graph.initializer))


def latency_by_batch_size(
    session: onnxruntime.InferenceSession,
    batch_sizes: Sequence[int] = (1, 2, 4, 8),
    repeats: int = 5,
    warmup: int = 1,
    image: np.ndarray | None = None,
) -> pd.DataFrame:
    """Time ``session.run`` in this process for each batch size, with a progress bar (notebook 01).

    ``image`` is one preprocessed ``[1, 3, H, W]`` (or ``[3, H, W]``) input repeated to fill
    the batch; random data of the session's shape otherwise (640x640 where it is symbolic).
    Returns one row per batch size: median, p90 and min milliseconds per call, and images/s
    at the median.
    """
    name = session.get_inputs()[0].name
    if image is None:
        shape = [d if isinstance(d, int) else 640 for d in session.get_inputs()[0].shape[1:]]
        image = np.random.default_rng(0).random((1, *shape), dtype=np.float32)
    image = np.asarray(image, dtype=np.float32).reshape(1, *np.shape(image)[-3:])
    rows = []
    with tqdm(total=len(batch_sizes) * (warmup + repeats), desc="onnxruntime latency") as bar:
        for size in batch_sizes:
            batch = np.ascontiguousarray(np.repeat(image, size, axis=0))
            times = []
            for i in range(warmup + repeats):
                bar.set_postfix(batch=size)
                started = time.perf_counter()
                session.run(None, {name: batch})
                if i >= warmup:
                    times.append(time.perf_counter() - started)
                bar.update()
            ms = np.array(times) * 1000
            median = float(np.median(ms))
            rows.append(
                {
                    "batch_size": size,
                    "median_ms": round(median, 1),
                    "p90_ms": round(percentiles(ms, (90,))[90], 1),
                    "min_ms": round(float(ms.min()), 1),
                    "ms_per_image": round(median / size, 1),
                    "images_per_s": round(size * 1000 / median, 1),
                }
            )
    return pd.DataFrame(rows)
