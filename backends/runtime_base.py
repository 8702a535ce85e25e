"""Shared machinery of the Python stand-in backends (onnxruntime, pytorch, tensorrt).

This file runs inside Triton's Python stub, next to each backend's ``model.py``; it must
not import ``helpers``. A stand-in behaves like the native backend it replaces:

* ``auto_complete_config`` fills in inputs, outputs and ``max_batch_size`` from the model
  file when config.pbtxt leaves them out;
* ``execute`` runs a whole dynamic batch in one runtime call and splits the results per
  request; a request that cannot run (missing input, wrong shape or dtype) gets its own
  error and the rest of the batch still succeeds;
* it follows ``instance_group`` (kind, device) and says in the server log that it is a
  Python stand-in, warning about config fields it ignores;
* requests of a batch are stacked into per-instance buffers reused from call to call
  (``host_buffers.py``; pinned memory where the runtime runs on a GPU), sized at load from
  ``max_batch_size``; a lone request is passed on as it came, with no copy;
* inputs arrive in host memory unless the config sets the Python backend's
  ``FORCE_CPU_ONLY_INPUT_TENSORS: "no"`` and the client sent them in GPU memory (CUDA shared
  memory): a runtime that can take GPU tensors (the PyTorch stand-in, through DLPack) overrides
  ``input_array`` and ``stack``; the others answer such a request with an error that says so.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils
from host_buffers import HostBufferPool, gather, pageable, split_rows

#: Default ``max_batch_size`` when a model supports batching and the config sets none
#: (the native backends' ``default-max-batch-size`` is 4 as well).
DEFAULT_MAX_BATCH_SIZE = 4

#: ``parameters`` the Python backend itself acts on (before the stand-in): never warned about.
BACKEND_PARAMETERS = frozenset({"FORCE_CPU_ONLY_INPUT_TENSORS"})


def tensor_spec(name: str, dtype: Any, dims: Sequence[int]) -> dict[str, Any]:
    """One input or output as a model file describes it, in config form (batch dim included)."""
    # The Triton type string: the Python backend's own table (Triton type -> numpy), inverted.
    types = {np.dtype(t): triton for triton, t in pb_utils.TRITON_STRING_TO_NUMPY.items()}
    return {"name": name, "data_type": types[np.dtype(dtype)], "dims": list(dims)}


class BadRequest(ValueError):
    """A request this model cannot run; the message names the input and what was expected."""


class StandInModel:
    """Base class of the stand-in ``TritonPythonModel`` classes."""

    #: Native backend this class stands in for, as Triton names it.
    backend_name = ""
    #: Default model file name (config ``default_model_filename`` overrides it).
    model_filename = ""
    #: ``parameters`` keys this runtime honours; others are reported as ignored.
    known_parameters: frozenset[str] = frozenset()

    # ----- to be provided by each runtime ---------------------------------------------
    @classmethod
    def read_signature(cls, model_path: str) -> tuple[list[dict], list[dict]]:
        """The model file's inputs and outputs (``tensor_spec``), without loading it to run."""
        raise NotImplementedError

    def load(self, model_path: str, kind: str, device_id: int) -> str:
        """Load the model for one instance; return a short description of the device used."""
        raise NotImplementedError

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one (possibly batched) call; keys are config input/output names."""
        raise NotImplementedError

    def allocate_host(self, nbytes: int) -> np.ndarray:
        """Host memory for the reused input/output buffers (pinned where a GPU runtime needs it)."""
        return pageable(nbytes)

    def copy_host(self, target: np.ndarray, source: np.ndarray) -> None:
        """Copy one request's rows into a batch buffer."""
        np.copyto(target, source)

    def input_array(self, name: str, tensor: Any) -> Any:
        """A request's input as this runtime takes it: a numpy array of host memory.

        An input in GPU memory (``FORCE_CPU_ONLY_INPUT_TENSORS: "no"`` and a client sending
        through CUDA shared memory) is refused here; runtimes that take GPU tensors override it.
        """
        if not tensor.is_cpu():
            raise BadRequest(
                f"input '{name}' arrived in GPU memory, which the {self.backend_name} stand-in "
                "cannot read: leave the parameter FORCE_CPU_ONLY_INPUT_TENSORS unset (or 'yes')"
            )
        return tensor.as_numpy()

    def stack(self, name: str, parts: list[Any]) -> Any:
        """The requests' arrays of input ``name`` as one batch (a reused host buffer)."""
        return gather(self.host_buffers, name, parts, self.copy_host)

    # ----- Triton entry points -------------------------------------------------------
    @classmethod
    def auto_complete_config(cls, auto_complete_model_config):
        """Fill in inputs, outputs and max_batch_size from the model file, like the native backend."""
        config = auto_complete_model_config.as_dict()
        if config["input"] and config["output"]:
            return auto_complete_model_config  # nothing to fill in
        folder = pb_utils.get_model_dir()
        if not os.path.isdir(folder):
            folder = os.path.dirname(folder)
        filename = config.get("default_model_filename") or cls.model_filename
        path = os.path.join(folder, filename)
        if not os.path.exists(path):
            raise pb_utils.TritonModelException(
                f"{cls.backend_name} stand-in: model file not found: {path}"
            )
        try:
            inputs, outputs = cls.read_signature(path)
        except pb_utils.TritonModelException:
            raise
        except Exception as error:  # noqa: BLE001 - report any reader failure as a load error
            raise pb_utils.TritonModelException(
                f"{cls.backend_name} stand-in: cannot read {path}: {error}"
            ) from error
        # A model batches when every tensor's first dimension is dynamic.
        supports_batching = all(spec["dims"][:1] == [-1] for spec in inputs + outputs)
        if not config["input"] and not config["output"]:
            if config["max_batch_size"] == 0 and supports_batching:
                auto_complete_model_config.set_max_batch_size(DEFAULT_MAX_BATCH_SIZE)
                auto_complete_model_config.set_dynamic_batching()
        batched = config["max_batch_size"] > 0 or (not config["input"] and supports_batching)
        for key, specs, add in [
            ("input", inputs, auto_complete_model_config.add_input),
            ("output", outputs, auto_complete_model_config.add_output),
        ]:
            if not config[key]:
                for spec in specs:
                    add({**spec, "dims": spec["dims"][1:] if batched else spec["dims"]})
        return auto_complete_model_config

    def initialize(self, args: dict[str, str]) -> None:
        self.model_config = json.loads(args["model_config"])
        self.model_name = args["model_name"]
        self.max_batch_size = int(self.model_config.get("max_batch_size", 0))
        self.inputs = self.model_config["input"]
        self.outputs = self.model_config["output"]
        self.input_names = [spec["name"] for spec in self.inputs]
        self.output_names = [spec["name"] for spec in self.outputs]
        self.output_dtypes = {
            out["name"]: pb_utils.triton_string_to_numpy(out["data_type"]) for out in self.outputs
        }
        filename = self.model_config.get("default_model_filename") or self.model_filename
        model_path = os.path.join(args["model_repository"], args["model_version"], filename)
        if not os.path.exists(model_path):
            raise pb_utils.TritonModelException(f"model file not found: {model_path}")
        kind = args["model_instance_kind"]
        device = self.load(model_path, kind, int(args["model_instance_device_id"] or 0))
        self.host_buffers = HostBufferPool(self.allocate_host)
        for spec in self.inputs if self.max_batch_size else []:
            if all(int(d) > 0 for d in spec["dims"]) and spec["data_type"] != "TYPE_STRING":
                itemsize = np.dtype(pb_utils.triton_string_to_numpy(spec["data_type"])).itemsize
                rows = int(np.prod([int(d) for d in spec["dims"]]))
                self.host_buffers.reserve(spec["name"], self.max_batch_size * rows * itemsize)
        log = pb_utils.Logger
        log.log_info(
            f"{self.model_name} ({args['model_instance_name']}): Python stand-in for Triton's "
            f"'{self.backend_name}' backend (triton-serving-lab), running on {device}; "
            "the NGC container serves this model with the native backend instead."
        )
        for warning in self.ignored_config_fields():
            log.log_warn(f"{self.model_name}: {warning}")

    def ignored_config_fields(self) -> list[str]:
        """Describe config fields this stand-in accepts but does not act on."""
        warnings = []
        optimization = self.model_config.get("optimization", {})
        accelerators = optimization.get("execution_accelerators", {})
        if accelerators.get("gpu_execution_accelerator") or accelerators.get(
            "cpu_execution_accelerator"
        ):
            warnings.append(
                "optimization.execution_accelerators is ignored by the Python stand-in "
                "(the native backend applies TensorRT/OpenVINO accelerators)"
            )
        if optimization.get("cuda", {}).get("graphs"):
            warnings.append("optimization.cuda.graphs is ignored by the Python stand-in")
        for key in self.model_config.get("parameters", {}):
            if key not in self.known_parameters | BACKEND_PARAMETERS:
                warnings.append(f"parameters['{key}'] is not used by the Python stand-in")
        return warnings

    def parameter(self, key: str, default: str | None = None) -> str | None:
        """Return ``parameters[key].string_value`` from the config, or ``default``."""
        value = self.model_config.get("parameters", {}).get(key)
        return value["string_value"] if value else default

    def execute(self, requests: Sequence[Any]) -> list[Any]:
        """Run every request of the batch in as few runtime calls as their shapes allow."""
        responses: list[Any] = [None] * len(requests)
        groups: dict[tuple, list[tuple[int, dict[str, np.ndarray]]]] = {}
        for index, request in enumerate(requests):
            try:
                arrays = self.read_request(request)
            except BadRequest as error:
                responses[index] = _error_response(str(error))
                continue
            key = tuple(
                (name, array.shape[1:] if self.max_batch_size else array.shape)
                for name, array in sorted(arrays.items())
            )
            groups.setdefault(key, []).append((index, arrays))
        for members in groups.values():
            self._run_group(members, responses)
        return responses

    def read_request(self, request: Any) -> dict[str, Any]:
        """Collect a request's inputs (``input_array``), checking them against the config."""
        arrays = {}
        for spec in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, spec["name"])
            if tensor is None:
                if spec.get("optional"):
                    continue
                raise BadRequest(f"missing input '{spec['name']}' for model '{self.model_name}'")
            array = self.input_array(spec["name"], tensor)
            expected = pb_utils.triton_string_to_numpy(spec["data_type"])
            if _numpy_dtype(array) != expected and spec["data_type"] != "TYPE_STRING":
                raise BadRequest(
                    f"input '{spec['name']}': expected {spec['data_type'][5:]}, got {array.dtype}"
                )
            dims = list(spec["dims"])
            shape = list(array.shape[1:] if self.max_batch_size else array.shape)
            if len(shape) != len(dims) or any(d not in (-1, s) for d, s in zip(dims, shape)):
                raise BadRequest(
                    f"input '{spec['name']}': expected shape {dims}, got {shape}"
                    + (" (after the batch dimension)" if self.max_batch_size else "")
                )
            if math.prod(array.shape) == 0:
                raise BadRequest(f"input '{spec['name']}' is empty (shape {list(array.shape)})")
            arrays[spec["name"]] = array
        return arrays

    def _run_group(self, members: list[tuple[int, dict[str, np.ndarray]]], responses: list) -> None:
        """Run requests of one shape together; if that fails, run them one by one."""
        if self.max_batch_size and len(members) > 1:
            names = members[0][1].keys()
            batch = {name: self.stack(name, [m[1][name] for m in members]) for name in names}
            sizes = [next(iter(m[1].values())).shape[0] for m in members]
            try:
                outputs = self.run(batch)
            except Exception:  # noqa: BLE001 - fall back to per-request calls to isolate the bad one
                outputs = None
            del batch  # the input buffers are free again once the call is over
            if outputs is not None:
                parts = {name: split_rows(value, sizes) for name, value in outputs.items()}
                for position, (index, _) in enumerate(members):
                    responses[index] = self._response(
                        {name: rows[position] for name, rows in parts.items()}
                    )
                return
        for index, arrays in members:
            try:
                responses[index] = self._response(self.run(arrays))
            except Exception as error:  # noqa: BLE001 - one request's failure is its own error
                responses[index] = _error_response(
                    f"{self.backend_name} failed on this request: {error}"
                )

    def _response(self, outputs: dict[str, Any]) -> Any:
        tensors = [
            self.output_tensor(name, value)
            for name, value in outputs.items()
            if name in self.output_dtypes
        ]
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def output_tensor(self, name: str, value: Any) -> Any:
        """One output of a response: a host array, as the config's data type."""
        return pb_utils.Tensor(name, np.ascontiguousarray(value, dtype=self.output_dtypes[name]))


def _numpy_dtype(array: Any) -> np.dtype | Any:
    """The numpy dtype of an input: a numpy array's own, a torch tensor's by name (GPU inputs)."""
    if isinstance(array.dtype, np.dtype):
        return array.dtype
    try:
        return np.dtype(str(array.dtype).removeprefix("torch."))
    except TypeError:  # no numpy equivalent (bfloat16): never equal to a config type
        return array.dtype


def _error_response(message: str) -> Any:
    error = pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG)
    return pb_utils.InferenceResponse(output_tensors=[], error=error)
