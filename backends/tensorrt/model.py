"""Python stand-in for Triton's TensorRT backend (platform "tensorrt_plan").

Serves ``<model>/<version>/model.plan`` with the ``tensorrt`` Python package on an NVIDIA
GPU (TensorRT 10 tensor API), using torch for device buffers. Without a GPU or without
the package, the model fails to load with an error that says which is missing; the other
models keep serving.
"""

from __future__ import annotations

import numpy as np
import triton_python_backend_utils as pb_utils
from runtime_base import StandInModel, tensor_spec


def _require_tensorrt():
    """Import tensorrt and torch with CUDA, or raise an error naming what is missing."""
    missing = []
    try:
        import tensorrt
    except ImportError:
        tensorrt = None
        missing.append("the 'tensorrt' Python package (pip install tensorrt)")
    try:
        import torch

        if not torch.cuda.is_available():
            missing.append("an NVIDIA GPU visible to torch (torch.cuda.is_available() is False)")
    except ImportError:
        torch = None
        missing.append("torch with CUDA (used for GPU buffers)")
    if missing:
        raise pb_utils.TritonModelException(
            "tensorrt_plan models need " + " and ".join(missing) + "; TensorRT engines run "
            "only on the GPU and TensorRT version they were built with"
        )
    return tensorrt, torch


def _deserialize(trt, model_path: str):
    logger = trt.Logger(trt.Logger.WARNING)
    runtime = trt.Runtime(logger)
    with open(model_path, "rb") as handle:
        engine = runtime.deserialize_cuda_engine(handle.read())
    if engine is None:
        raise pb_utils.TritonModelException(
            f"TensorRT could not deserialize {model_path}: it was built for another GPU or "
            "TensorRT version (see the .json sidecar beside it) or the file is damaged"
        )
    return engine


class TritonPythonModel(StandInModel):
    backend_name = "tensorrt"
    model_filename = "model.plan"

    @classmethod
    def read_signature(cls, model_path: str) -> tuple[list[dict], list[dict]]:
        trt, _ = _require_tensorrt()
        engine = _deserialize(trt, model_path)
        inputs, outputs = [], []
        for index in range(engine.num_io_tensors):
            name = engine.get_tensor_name(index)
            dtype = trt.nptype(engine.get_tensor_dtype(name))
            spec = tensor_spec(name, dtype, engine.get_tensor_shape(name))
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (inputs if is_input else outputs).append(spec)
        return inputs, outputs

    def load(self, model_path: str, kind: str, device_id: int) -> str:
        trt, torch = _require_tensorrt()
        self.torch = torch
        self.device = torch.device("cuda", device_id)
        torch.cuda.set_device(self.device)
        self.engine = _deserialize(trt, model_path)
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream(self.device)
        return (
            f"GPU {device_id} ({torch.cuda.get_device_name(device_id)}), TensorRT {trt.__version__}"
        )

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self.torch
        keep = []
        for name, array in inputs.items():
            tensor = torch.from_numpy(np.ascontiguousarray(array)).to(self.device)
            keep.append(tensor)
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        outputs = {}
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = torch.from_numpy(np.empty(0, dtype=self.output_dtypes[name])).dtype
            outputs[name] = torch.empty(shape, dtype=dtype, device=self.device)
            self.context.set_tensor_address(name, outputs[name].data_ptr())
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        self.stream.synchronize()
        return {name: tensor.cpu().numpy() for name, tensor in outputs.items()}
