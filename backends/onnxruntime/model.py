"""Python stand-in for Triton's onnxruntime backend (platform "onnxruntime_onnx").

Serves ``<model>/<version>/model.onnx`` with ONNX Runtime inside the embedded server.
Uses the CUDA execution provider for KIND_GPU instances when ``onnxruntime-gpu`` is
installed. Honours the native backend's ``intra_op_thread_count`` and
``inter_op_thread_count`` parameters.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from runtime_base import StandInModel, tensor_spec


def _spec(value_info) -> dict:
    tensor_type = value_info.type.tensor_type
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim]
    return tensor_spec(value_info.name, dtype, dims)


class TritonPythonModel(StandInModel):
    backend_name = "onnxruntime"
    model_filename = "model.onnx"
    known_parameters = frozenset({"intra_op_thread_count", "inter_op_thread_count"})

    @classmethod
    def read_signature(cls, model_path: str) -> tuple[list[dict], list[dict]]:
        graph = onnx.load(model_path, load_external_data=False).graph
        initializers = {init.name for init in graph.initializer}
        inputs = [_spec(v) for v in graph.input if v.name not in initializers]
        return inputs, [_spec(v) for v in graph.output]

    def load(self, model_path: str, kind: str, device_id: int) -> str:
        options = ort.SessionOptions()
        intra = self.parameter("intra_op_thread_count")
        inter = self.parameter("inter_op_thread_count")
        if intra:
            options.intra_op_num_threads = int(intra)
        if inter:
            options.inter_op_num_threads = int(inter)
        providers: list = ["CPUExecutionProvider"]
        device = "CPU"
        if kind == "GPU":
            if "CUDAExecutionProvider" in ort.get_available_providers():
                providers.insert(0, ("CUDAExecutionProvider", {"device_id": device_id}))
                device = f"GPU {device_id} (CUDAExecutionProvider)"
            else:
                device = "CPU (KIND_GPU asked, but this onnxruntime has no CUDA provider)"
        self.session = ort.InferenceSession(model_path, options, providers=providers)
        return device

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self.session.run(self.output_names, inputs)
        return dict(zip(self.output_names, values))
