"""Version 2 of score_calibrator: probability = sigmoid(score / temperature) (notebook 09).

Self-contained (numpy only). Version 1 was over-confident; dividing the score by a
temperature above 1 (fitted on held-out data, here a constant) softens its probabilities.
The inputs and outputs are the same as version 1's, so clients need no change.
"""

from __future__ import annotations

import numpy as np
import triton_python_backend_utils as pb_utils

VERSION = "2"
TEMPERATURE = 2.0


class TritonPythonModel:
    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            score = pb_utils.get_input_tensor_by_name(request, "SCORE").as_numpy()
            probability = 1.0 / (1.0 + np.exp(-score / TEMPERATURE))
            version = np.full(score.shape, VERSION.encode(), dtype=object)
            outputs = [
                pb_utils.Tensor("PROBABILITY", probability.astype(np.float32)),
                pb_utils.Tensor("VERSION", version),
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
        return responses
