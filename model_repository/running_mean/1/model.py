"""The running mean of each sequence's values: state kept in the model (notebook 09).

Self-contained: copy this folder into any model repository (numpy only). Triton's sequence
batcher sends every request of a sequence to this instance with the control inputs START,
END and CORRID (see config.pbtxt); the state of each live sequence (its count and sum) is a
dictionary entry keyed by the correlation ID, created on START and dropped on END.
"""

from __future__ import annotations

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        self.state: dict[int, tuple[int, float]] = {}  # correlation ID -> (count, sum)

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            value = float(pb_utils.get_input_tensor_by_name(request, "VALUE").as_numpy().ravel()[0])
            start = int(pb_utils.get_input_tensor_by_name(request, "START").as_numpy().ravel()[0])
            end = int(pb_utils.get_input_tensor_by_name(request, "END").as_numpy().ravel()[0])
            corrid = int(pb_utils.get_input_tensor_by_name(request, "CORRID").as_numpy().ravel()[0])
            if start or corrid not in self.state:
                self.state[corrid] = (0, 0.0)
            count, total = self.state[corrid]
            count, total = count + 1, total + value
            self.state[corrid] = (count, total)
            if end:
                del self.state[corrid]
            outputs = [
                pb_utils.Tensor("MEAN", np.array([[total / count]], np.float32)),
                pb_utils.Tensor("COUNT", np.array([[count]], np.int64)),
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
        return responses
