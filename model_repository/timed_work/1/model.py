"""A model with a known service time, for scheduling lessons (notebook 09).

Self-contained: copy this folder into any model repository (numpy only). Each execution
sleeps ``service_ms`` (a config parameter) per request it was given, like a model whose work
grows with the batch, and answers every request with X echoed as Y, the execution's start
and end (``time.time_ns()``) and the instance's process id. Sleeping uses no CPU, so what a
client sees (queueing, overlap, order) is what Triton's scheduler did.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        parameters = config.get("parameters", {})
        self.service_s = float(parameters.get("service_ms", {}).get("string_value", "200")) / 1e3

    def execute(self, requests: list) -> list:
        start = time.time_ns()
        time.sleep(self.service_s * len(requests))
        end = time.time_ns()
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            rows = x.shape[0]
            outputs = [
                pb_utils.Tensor("Y", x.astype(np.float32)),
                pb_utils.Tensor("START_NS", np.full((rows, 1), start, np.int64)),
                pb_utils.Tensor("END_NS", np.full((rows, 1), end, np.int64)),
                pb_utils.Tensor("PID", np.full((rows, 1), os.getpid(), np.int64)),
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
        return responses
