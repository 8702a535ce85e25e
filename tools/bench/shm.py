"""The course's fallback load generator over system shared memory, for the benchmarks.

``shm_target`` is ``helpers.loadgen.triton_target`` with its tensors in POSIX shared memory
regions registered with the server, like ``perf_analyzer --shared-memory=system``: the
requests then carry only region names, so the client's serialisation and the copies through
the socket drop out of the measurement (client and server must share the machine). Used by
``gpu-tools`` (perf_analyzer and the fallback generator over the same transport) and
``served-vs-inprocess``.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import numpy as np
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import triton_to_np_dtype

from helpers.loadgen import Inputs, Outputs, Payload, Prepared, Target, prepare, triton_target

#: Where ``shm_target`` puts the tensors: in the request, or in system shared memory regions.
MEMORIES = ("none", "system")


def output_byte_sizes(client: Any, protocol: str, model: str, batch_size: int) -> dict[str, int]:
    """Bytes of each output of ``model`` for a request of ``batch_size``, from its metadata."""
    if protocol == "grpc":
        metadata = client.get_model_metadata(model, as_json=True)
    else:
        metadata = client.get_model_metadata(model)
    sizes = {}
    for output in metadata["outputs"]:
        dims = [int(d) for d in output["shape"]]
        if dims and dims[0] == -1:
            dims[0] = batch_size
        dtype = triton_to_np_dtype(output["datatype"])
        if any(d < 0 for d in dims) or dtype is None or dtype == np.object_:
            raise ValueError(
                f"output '{output['name']}' of '{model}' has shape {output['shape']} and type "
                f"{output['datatype']}: its size is not known before the request, so it cannot "
                "go through shared memory"
            )
        sizes[output["name"]] = int(np.prod(dims)) * np.dtype(dtype).itemsize
    return sizes


def prepare_in_system_memory(
    protocol: str, url: str, model: str, payload: Payload
) -> tuple[Prepared, list[Any]]:
    """``helpers.loadgen.prepare`` with every input and output in a region of its own.

    Returns the sender and the regions' handles, inputs first; ``Prepared.close``
    unregisters and destroys them.
    """
    handles: list[Any] = []

    def region(prepared: Prepared, name: str, byte_size: int) -> tuple[str, Any]:
        handle = shm.create_shared_memory_region(name, "/" + name, byte_size)
        handles.append(handle)

        def release() -> None:
            try:
                prepared.client.unregister_system_shared_memory(name)
            finally:  # the server may be gone; the region is still ours to unlink
                shm.destroy_shared_memory_region(handle)

        prepared.cleanups.append(release)
        prepared.client.register_system_shared_memory(name, "/" + name, byte_size)
        return name, handle

    def place(prepared: Prepared, inputs: Inputs, outputs: Outputs) -> None:
        tag = f"loadgen_{os.getpid()}_{uuid.uuid4().hex[:12]}"
        for position, (name, (array, data, _)) in enumerate(list(inputs.items())):
            region_name, handle = region(prepared, f"{tag}_in{position}", len(data))
            shm.set_shared_memory_region(handle, [np.frombuffer(data, dtype=np.uint8)])
            inputs[name] = (array, data, region_name)
        sizes = output_byte_sizes(prepared.client, protocol, model, payload.batch_size)
        for position, name in enumerate(list(outputs) or sizes):
            outputs[name] = (region(prepared, f"{tag}_out{position}", sizes[name])[0], sizes[name])

    return prepare(protocol, url, model, payload, place), handles


def shm_target(
    url: str, model: str, payload: Payload, memory: str = "system", protocol: str = "grpc"
) -> Target:
    """``triton_target`` with its tensors in system shared memory (``memory="system"``) or not."""
    if memory not in MEMORIES:
        raise ValueError(f"memory must be one of {MEMORIES}, not {memory!r}")
    target = triton_target(url, model, payload, protocol=protocol)
    if memory == "system":
        target.new_sender = lambda: prepare_in_system_memory(protocol, url, model, payload)[0]
    return target
