"""YOLO11n bytes-in, boxes-out written as code with BLS (notebook 08).

Self-contained: copy this folder with ``yolo11n_preprocess``, ``yolo11n_postprocess`` and a
detector (``yolo11n_onnx`` or ``yolo11n_torchscript``) into any model repository. Nothing
here imports the course's ``helpers``.

For each request: ``yolo11n_preprocess`` (bytes -> tensor), the detector, then
``yolo11n_postprocess`` (raw output -> boxes), each an in-server call
(``pb_utils.InferenceRequest(...).async_exec()``). The requests of a batch run concurrently,
so the steps' own dynamic batchers group them again. Unlike an ensemble it can:

* take the detector from the request parameter ``detector`` (default: the config's);
* skip the detector when the image's shorter side is below ``min_side`` pixels;
* return the failing step's error to the caller, prefixed with the step's name.
"""

from __future__ import annotations

import asyncio
import json

import numpy as np
import triton_python_backend_utils as pb_utils

#: Detectors this pipeline can call, with their input and output tensor names.
DETECTORS = {
    "yolo11n_onnx": ("images", "output0"),
    "yolo11n_torchscript": ("INPUT__0", "OUTPUT__0"),
}


class StepError(Exception):
    """A step of the pipeline failed; the message names it."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


async def call(
    model: str, inputs: list, outputs: list[str], code: int | None = None
) -> list[np.ndarray]:
    """Run ``model`` in this server; return the named outputs or raise StepError naming it.

    python_backend 2.51 hands a BLS caller every error of the called model as INTERNAL (an
    HTTP 500), whatever code that model answered with: ``code`` says what its errors mean.
    """
    request = pb_utils.InferenceRequest(
        model_name=model, inputs=inputs, requested_output_names=outputs
    )
    response = await request.async_exec()
    if response.has_error():
        error = response.error()
        raise StepError(f"{model}: {error.message()}", code or error.code())
    return [pb_utils.get_output_tensor_by_name(response, name).as_numpy() for name in outputs]


class TritonPythonModel:
    """Triton's entry point: one pipeline run per request, all of a batch concurrently."""

    def initialize(self, args: dict) -> None:
        parameters = json.loads(args["model_config"]).get("parameters", {})
        self.detector = parameters.get("detector", {}).get("string_value", "yolo11n_onnx")
        self.min_side = int(parameters.get("min_side", {}).get("string_value", "32"))

    async def execute(self, requests: list) -> list:
        return list(await asyncio.gather(*(self._respond(r) for r in requests)))

    async def _respond(self, request):
        try:
            detections, labels = await self._pipeline(request)
            return pb_utils.InferenceResponse(
                output_tensors=[
                    pb_utils.Tensor("DETECTIONS", detections),
                    pb_utils.Tensor("LABELS", labels),
                ]
            )
        except StepError as error:
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(error), error.code))
        except ValueError as error:
            return pb_utils.InferenceResponse(
                error=pb_utils.TritonError(str(error), pb_utils.TritonError.INVALID_ARG)
            )

    async def _pipeline(self, request) -> tuple[np.ndarray, np.ndarray]:
        detector = json.loads(request.parameters() or "{}").get("detector", self.detector)
        if detector not in DETECTORS:
            raise ValueError(f"unknown detector {detector!r}: choose one of {sorted(DETECTORS)}")
        image = pb_utils.get_input_tensor_by_name(request, "IMAGE")
        tensor, letterbox = await call(  # its errors are about the client's image: a 400
            "yolo11n_preprocess", [pb_utils.Tensor("IMAGE", image.as_numpy())],
            ["images", "LETTERBOX"], code=pb_utils.TritonError.INVALID_ARG,
        )  # fmt: skip
        batch = len(letterbox)
        if letterbox[:, :2].min() < self.min_side:  # original height and width
            return np.zeros((batch, 0, 6), np.float32), np.zeros((batch, 0), dtype=object)
        input_name, output_name = DETECTORS[detector]
        (raw,) = await call(detector, [pb_utils.Tensor(input_name, tensor)], [output_name])
        thresholds = [  # the optional inputs the client sent, passed on
            pb_utils.Tensor(name, given.as_numpy())
            for name in ("CONF", "IOU")
            if (given := pb_utils.get_input_tensor_by_name(request, name)) is not None
        ]
        detections, labels = await call(
            "yolo11n_postprocess",
            [pb_utils.Tensor("output0", raw), pb_utils.Tensor("LETTERBOX", letterbox), *thresholds],
            ["DETECTIONS", "LABELS"],
        )
        return detections, labels
