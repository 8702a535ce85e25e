"""Version 1 of score_calibrator: probability = sigmoid(score) (notebook 09).

Self-contained (numpy only). Version 2 (../2/model.py) is calibrated with a temperature.
"""

from __future__ import annotations

import numpy as np
import triton_python_backend_utils as pb_utils

VERSION = "1"


class TritonPythonModel:
    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            score = pb_utils.get_input_tensor_by_name(request, "SCORE").as_numpy()
            probability = 1.0 / (1.0 + np.exp(-score))
            version = np.full(score.shape, VERSION.encode(), dtype=object)
            outputs = [
                pb_utils.Tensor("PROBABILITY", probability.astype(np.float32)),
                pb_utils.Tensor("VERSION", version),
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
        return responses
