"""Python stand-in for Triton's PyTorch (libtorch) backend (platform "pytorch_libtorch").

Serves a TorchScript ``<model>/<version>/model.pt`` with torch inside the embedded server,
on CUDA for KIND_GPU instances when torch sees a GPU. Like the native backend, inputs are
passed to ``forward`` in config order and outputs are matched to the config by position
(names such as ``INPUT__0`` / ``OUTPUT__0``). The native backend's parameter
``DISABLE_OPTIMIZED_EXECUTION: "true"`` turns off TorchScript's profiling executor, which
otherwise re-specialises the graph for every new batch size dynamic batching produces.

On a GPU, the batch is stacked in pinned host memory reused from call to call and copied to
the GPU asynchronously; outputs come back into reused pinned buffers (``host_buffers.py``).
``NUM_THREADS`` (torch's intra-op threads) also sets how many threads stack a batch (32
YOLO11n images are 39 MB). Without it an instance inherits ``OMP_NUM_THREADS``, which
importing Ultralytics sets to 1 (``tools/bench/gpu.py`` sets it: cores / instances).
With the Python backend's ``FORCE_CPU_ONLY_INPUT_TENSORS: "no"``, an input the client sent in GPU
memory (CUDA shared memory) reaches ``execute`` as a GPU tensor and is read through DLPack with
no copy; a batch of them is stacked on the GPU (``torch.cat``), so it never touches the host.
Host inputs take the pinned path above; a batch may mix both.
Opt-in, this stand-in's own parameters (the native backend has no equivalent):

* ``CUDA_GRAPHS: "true"``: capture the model in one CUDA graph per batch size at load
  (``torch_runner.py``); ``CUDA_GRAPH_BATCH_SIZES: "1,2,4,8,16,32"`` captures only those
  and pads a batch up to the next one. A model that cannot be captured is logged and runs
  without graphs.
* ``OUTPUTS_ON_GPU: "true"``: the outputs of a batch whose inputs all came in GPU memory stay
  on the GPU and go to the Python backend through DLPack, which copies them on the GPU into
  a client's CUDA shared memory (without it they are copied into pinned host memory first,
  and the Python backend copies them from the host to the client's GPU region per request).
  Batches with host inputs always answer from host memory.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
import triton_python_backend_utils as pb_utils
from runtime_base import StandInModel
from torch.utils.dlpack import from_dlpack, to_dlpack
from torch_runner import GraphCaptureError, GraphedModule, as_list, graph_batch_sizes

try:  # registers torchvision's operators (NMS, RoI align) for TorchScript files that use them
    import torchvision  # noqa: F401
except ImportError:  # pragma: no cover - only models that call torchvision ops need it
    pass

#: Parameters that mean "yes".
_TRUE = ("true", "1", "yes", "on")


class TritonPythonModel(StandInModel):
    backend_name = "pytorch"
    model_filename = "model.pt"
    known_parameters = frozenset(
        {
            "INFERENCE_MODE",
            "NUM_THREADS",
            "DISABLE_OPTIMIZED_EXECUTION",
            "CUDA_GRAPHS",
            "CUDA_GRAPH_BATCH_SIZES",
            "OUTPUTS_ON_GPU",
        }
    )

    @classmethod
    def read_signature(cls, model_path: str) -> tuple[list[dict], list[dict]]:
        raise pb_utils.TritonModelException(
            "pytorch_libtorch models need their inputs and outputs in config.pbtxt: a "
            "TorchScript file does not record tensor shapes (the native backend needs them too)"
        )

    def load(self, model_path: str, kind: str, device_id: int) -> str:
        self.optimized_execution = not self.flag("DISABLE_OPTIMIZED_EXECUTION")
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
        self.outputs_on_gpu = self.flag("OUTPUTS_ON_GPU") and self.device.type == "cuda"
        self.graphed: GraphedModule | None = None
        if self.flag("CUDA_GRAPHS"):
            described += ", " + self.capture_graphs()
        return described

    def flag(self, key: str) -> bool:
        """A yes/no parameter of the config (``"true"``, ``"1"``, ``"yes"``, ``"on"``), off when absent."""
        return (self.parameter(key) or "").strip().lower() in _TRUE

    def capture_graphs(self) -> str:
        """Capture one CUDA graph per batch size; on failure log why and run without graphs."""
        name = self.model_name
        if self.device.type != "cuda":
            pb_utils.Logger.log_warn(
                f"{name}: CUDA_GRAPHS asked, but this instance runs on the CPU: no CUDA graphs"
            )
            return "no CUDA graphs (CPU)"
        if not self.max_batch_size or any(int(d) < 1 for spec in self.inputs for d in spec["dims"]):
            pb_utils.Logger.log_warn(
                f"{name}: CUDA_GRAPHS needs max_batch_size > 0 and fixed input dims: no CUDA graphs"
            )
            return "no CUDA graphs (variable shapes)"
        specs = [
            (
                [int(d) for d in spec["dims"]],
                torch.from_numpy(
                    np.empty(0, pb_utils.triton_string_to_numpy(spec["data_type"]))
                ).dtype,
            )
            for spec in self.inputs
        ]
        sizes = graph_batch_sizes(self.parameter("CUDA_GRAPH_BATCH_SIZES"), self.max_batch_size)
        try:
            self.graphed = GraphedModule(self.module, specs, sizes, self.device)
        except GraphCaptureError as error:
            pb_utils.Logger.log_warn(
                f"{name}: this model cannot be captured in a CUDA graph, so it runs without "
                f"graphs: {error}"
            )
            return "no CUDA graphs (capture failed: see the warning)"
        return f"CUDA graphs for batch sizes {sizes[0]}..{sizes[-1]} ({len(sizes)} graphs)"

    def allocate_host(self, nbytes: int) -> np.ndarray:
        """Pinned host memory on a GPU instance (copies to and from it run at full speed)."""
        if self.device.type == "cuda":
            return torch.empty(nbytes, dtype=torch.uint8, pin_memory=True).numpy()
        return super().allocate_host(nbytes)

    def copy_host(self, target: np.ndarray, source: np.ndarray) -> None:
        """torch's CPU copy, which uses several threads for large arrays."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # request arrays may be read-only: only read here
            torch.from_numpy(target).copy_(torch.from_numpy(source))

    def input_array(self, name: str, tensor: Any) -> np.ndarray | torch.Tensor:
        """A host input as numpy; a GPU input as a torch tensor on that memory (DLPack, no copy)."""
        if tensor.is_cpu():
            return tensor.as_numpy()
        return from_dlpack(tensor.to_dlpack())

    def stack(self, name: str, parts: list[Any]) -> np.ndarray | torch.Tensor:
        """Host parts into the reused pinned buffer; if any part is on the GPU, one GPU tensor."""
        if not any(isinstance(part, torch.Tensor) for part in parts):
            return super().stack(name, parts)
        if len(parts) == 1:
            return parts[0]
        return torch.cat([self.on_device(part) for part in parts])

    def on_device(self, value: np.ndarray | torch.Tensor) -> torch.Tensor:
        """An input on this instance's device (a GPU input already there is not copied)."""
        if not isinstance(value, torch.Tensor):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # request arrays may be read-only: only read here
                value = torch.from_numpy(value)
        return value.to(self.device, non_blocking=True)

    def run(self, inputs: dict[str, np.ndarray | torch.Tensor]) -> dict[str, Any]:
        tensors = [self.on_device(inputs[name]) for name in self.input_names]
        with torch.inference_mode(), torch.jit.optimized_execution(self.optimized_execution):
            if self.graphed is not None:
                result: object = self.graphed(*tensors)
            else:
                result = self.module(*tensors)
        if isinstance(result, dict):
            result = [result[name] for name in self.output_names]
        # Outputs stay on the GPU only for a batch whose inputs all came in GPU memory.
        on_gpu = self.outputs_on_gpu and all(
            isinstance(inputs[name], torch.Tensor) and inputs[name].is_cuda
            for name in self.input_names
        )
        return {
            name: value.detach() if on_gpu and value.is_cuda else self.to_host(name, value)
            for name, value in zip(self.output_names, as_list(result))
        }

    def output_tensor(self, name: str, value: Any) -> Any:
        """A GPU output handed to the Python backend through DLPack; a host output as the base does."""
        if not isinstance(value, torch.Tensor):
            return super().output_tensor(name, value)
        # A capsule, not the tensor: the Python backend then adds no stream synchronise per
        # output; its copies of the outputs run on the legacy default stream, the one torch ran
        # the model on, so after it.
        return pb_utils.Tensor.from_dlpack(name, to_dlpack(value.contiguous()))

    def to_host(self, name: str, value: torch.Tensor) -> np.ndarray:
        """A GPU output copied into a reused pinned buffer; a CPU output as it is."""
        value = value.detach()
        if value.device.type != "cuda":
            return value.numpy()
        dtype = np.dtype(str(value.dtype).removeprefix("torch."))
        host = self.host_buffers.take(f"output {name}", tuple(value.shape), dtype)
        torch.from_numpy(host).copy_(value)  # synchronous: done before the response is built
        return host
