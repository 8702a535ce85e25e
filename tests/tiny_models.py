"""Small real models for fast server tests: a conv net exported to ONNX and TorchScript.

The same weights are saved in both formats, so served outputs can be compared with
in-process onnxruntime and torch on the same inputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

CHANNELS, SIZE, CLASSES = 3, 16, 4


class TinyNet(torch.nn.Module):
    """Conv -> ReLU -> global average -> linear: [N, 3, H, W] -> [N, 4]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(CHANNELS, 8, kernel_size=3)
        self.head = torch.nn.Linear(8, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def tiny_net() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet().eval()


def sample_batch(batch: int, seed: int = 0, size: int = SIZE) -> np.ndarray:
    return (
        np.random.default_rng(seed)
        .standard_normal((batch, CHANNELS, size, size))
        .astype(np.float32)
    )


ONNX_MINIMAL_CONFIG = 'platform: "onnxruntime_onnx"\n'
ONNX_CONFIG = """
name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [ {{ name: "images", data_type: TYPE_FP32, dims: [ 3, -1, -1 ] }} ]
output [ {{ name: "scores", data_type: TYPE_FP32, dims: [ 4 ] }} ]
{batching}
instance_group [ {{ kind: KIND_CPU, count: 1 }} ]
"""
TORCHSCRIPT_CONFIG = """
name: "tiny_torchscript"
platform: "pytorch_libtorch"
max_batch_size: 8
input [ { name: "INPUT__0", data_type: TYPE_FP32, dims: [ 3, 16, 16 ] } ]
output [ { name: "OUTPUT__0", data_type: TYPE_FP32, dims: [ 4 ] } ]
dynamic_batching { max_queue_delay_microseconds: 20000 }
instance_group [ { kind: KIND_CPU, count: 1 } ]
"""
BATCHING = "dynamic_batching { max_queue_delay_microseconds: 50000 }"


def _write(folder: Path, config: str, filename: str, content: bytes | None = None) -> Path:
    (folder / "1").mkdir(parents=True, exist_ok=True)
    (folder / "config.pbtxt").write_text(config)
    if content is not None:
        (folder / "1" / filename).write_bytes(content)
    return folder / "1" / filename


def build_tiny_repository(root: Path) -> Path:
    """Write the tiny models and a few broken ones under ``root``; return ``root``."""
    net = tiny_net()
    example = torch.from_numpy(sample_batch(1))
    onnx_path = _write(
        root / "tiny_onnx", ONNX_CONFIG.format(name="tiny_onnx", batching=BATCHING), "model.onnx"
    )
    torch.onnx.export(
        net,
        (example,),
        str(onnx_path),
        input_names=["images"],
        output_names=["scores"],
        dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"}, "scores": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    onnx_bytes = onnx_path.read_bytes()
    _write(
        root / "tiny_onnx_nobatch",
        ONNX_CONFIG.format(name="tiny_onnx_nobatch", batching=""),
        "model.onnx",
        onnx_bytes,
    )
    _write(root / "tiny_onnx_minimal", ONNX_MINIMAL_CONFIG, "model.onnx", onnx_bytes)
    ts_path = _write(root / "tiny_torchscript", TORCHSCRIPT_CONFIG, "model.pt")
    torch.jit.trace(net, example).save(str(ts_path))
    # Broken on purpose: a config that does not parse, a corrupt file, an engine without TensorRT.
    _write(
        root / "broken_config",
        'platform: "onnxruntime_onnx"\nmax_batch_size: eight\n',
        "model.onnx",
        onnx_bytes,
    )
    _write(root / "corrupt_onnx", ONNX_MINIMAL_CONFIG, "model.onnx", b"this is not a protobuf" * 10)
    _write(
        root / "tiny_trt",
        'platform: "tensorrt_plan"\nmax_batch_size: 8\n',
        "model.plan",
        b"\0" * 64,
    )
    return root
