"""Python stand-in for Triton's PyTorch (libtorch) backend (platform "pytorch_libtorch").

Serves a TorchScript ``<model>/<version>/model.pt`` with torch inside the embedded server,
on CUDA for KIND_GPU instances when torch sees a GPU. Like the native backend, inputs are
passed to ``forward`` in config order and outputs are matched to the config by position
(names such as ``INPUT__0`` / ``OUTPUT__0``). The native backend's parameter
``DISABLE_OPTIMIZED_EXECUTION: "true"`` turns off TorchScript's profiling executor, which
otherwise re-specialises the graph for every new batch size dynamic batching produces.
"""

from __future__ import annotations

import numpy as np
import torch
import triton_python_backend_utils as pb_utils
from runtime_base import ModelSignature, StandInModel


class TritonPythonModel(StandInModel):
    backend_name = "pytorch"
    model_filename = "model.pt"
    known_parameters = frozenset({"INFERENCE_MODE", "NUM_THREADS", "DISABLE_OPTIMIZED_EXECUTION"})

    @classmethod
    def read_signature(cls, model_path: str) -> ModelSignature:
        raise pb_utils.TritonModelException(
            "pytorch_libtorch models need their inputs and outputs in config.pbtxt: a "
            "TorchScript file does not record tensor shapes (the native backend needs them too)"
        )

    def load(self, model_path: str, kind: str, device_id: int) -> str:
        disable = self.parameter("DISABLE_OPTIMIZED_EXECUTION", "false")
        self.optimized_execution = disable.strip().lower() not in ("true", "1", "yes")
        threads = self.parameter("NUM_THREADS")
        if threads:
            torch.set_num_threads(int(threads))
        if kind == "GPU" and torch.cuda.is_available():
            self.device = torch.device("cuda", device_id)
            described = f"GPU {device_id} ({torch.cuda.get_device_name(device_id)})"
        else:
            self.device = torch.device("cpu")
            described = "CPU" if kind != "GPU" else "CPU (KIND_GPU asked, but torch sees no GPU)"
        self.module = torch.jit.load(model_path, map_location=self.device).eval()
        self.input_names = [spec["name"] for spec in self.inputs]
        self.output_names = [spec["name"] for spec in self.outputs]
        return described

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tensors = [torch.from_numpy(inputs[name]).to(self.device) for name in self.input_names]
        with torch.inference_mode(), torch.jit.optimized_execution(self.optimized_execution):
            result = self.module(*tensors)
        if isinstance(result, torch.Tensor):
            result = [result]
        if isinstance(result, dict):
            result = [result[name] for name in self.output_names]
        return {
            name: value.detach().cpu().numpy() for name, value in zip(self.output_names, result)
        }
