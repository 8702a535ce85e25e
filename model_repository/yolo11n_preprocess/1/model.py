"""Decode and letterbox images on the server: bytes in, YOLO11n's input out (notebook 08).

Self-contained: copy this folder into any model repository whose Python environment has
numpy and opencv-python. Nothing here imports the course's ``helpers``. Its letterbox has a twin
on the client side: notebook 03's ``preprocess`` cell (generated into
``helpers/lessons/yolo_client.py``); tests/test_pipeline.py checks both give the same boxes.

Input (per request): IMAGE, the bytes of an image file (JPEG, PNG, WebP, BMP), decoded in
memory with OpenCV. Outputs: ``images`` float32 [3, S, S] (RGB in [0, 1], letterboxed to
S = ``input_size`` with grey 114 padding, the same arithmetic as Ultralytics'
``LetterBox(auto=False)``) and LETTERBOX float32 [6] = original height, original width,
gain x, gain y, pad left, pad top, which ``yolo11n_postprocess`` uses to map boxes back.

A request whose image is empty, not an image, damaged or too large gets its own error that
names the problem; the other requests of the same dynamic batch are answered normally.
"""

from __future__ import annotations

import json
import os

# OpenCV refuses images above this many pixels before allocating them (decompression bombs).
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(100_000_000))
OPENCV_MAX_PIXELS = int(os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"])

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

PAD_VALUE = 114


class ImageError(ValueError):
    """The IMAGE input of one request cannot be turned into a picture."""


def decode_image(data: bytes, max_bytes: int, max_pixels: int) -> np.ndarray:
    """Encoded image bytes -> BGR uint8 [H, W, 3], or ImageError naming what is wrong."""
    if len(data) == 0:
        raise ImageError("IMAGE is empty (0 bytes): send the bytes of a JPEG, PNG or WebP file")
    if len(data) > max_bytes:
        raise ImageError(f"IMAGE is {len(data)} bytes, above the limit of {max_bytes}")
    buffer = np.frombuffer(data, dtype=np.uint8)
    try:
        image = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    except cv2.error as error:
        if "CV_IO_MAX_IMAGE_PIXELS" in str(error):  # OpenCV read the size and refused to decode
            raise ImageError(
                f"IMAGE has more than {OPENCV_MAX_PIXELS} pixels, above the limit of {max_pixels}"
            ) from None
        raise ImageError(f"IMAGE could not be decoded ({len(data)} bytes)") from None
    if image is None:
        raise ImageError(
            f"IMAGE is not an image OpenCV can decode ({len(data)} bytes starting {data[:8]!r})"
        )
    height, width = image.shape[:2]
    if height * width > max_pixels:
        raise ImageError(f"IMAGE is {width}x{height} pixels, above the limit of {max_pixels}")
    return image


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize keeping the aspect ratio, pad to size x size; return it and the 6 mapping values."""
    height, width = image.shape[:2]
    ratio = min(size / height, size / width)
    new_w, new_h = max(round(width * ratio), 1), max(round(height * ratio), 1)
    if (new_w, new_h) != (width, height):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    dw, dh = (size - new_w) / 2, (size - new_h) / 2
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    padded = cv2.copyMakeBorder(
        image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3
    )
    mapping = np.array([height, width, new_w / width, new_h / height, left, top], np.float32)
    return padded, mapping


def to_tensor(image_bgr: np.ndarray) -> np.ndarray:
    """BGR uint8 [H, W, 3] -> RGB float32 [3, H, W] in [0, 1]."""
    rgb = image_bgr[:, :, ::-1].transpose(2, 0, 1)
    return np.ascontiguousarray(rgb, dtype=np.float32) / np.float32(255.0)


class TritonPythonModel:
    """Triton's entry point: one response per request, each with its own error if any."""

    def initialize(self, args: dict) -> None:
        parameters = json.loads(args["model_config"]).get("parameters", {})

        def number(key: str, default: int) -> int:
            return int(parameters.get(key, {}).get("string_value", default))

        self.size = number("input_size", 640)
        self.max_pixels = number("max_pixels", 40_000_000)
        self.max_bytes = number("max_bytes", 20_000_000)

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            try:
                images = pb_utils.get_input_tensor_by_name(request, "IMAGE").as_numpy()
                tensors, mappings = [], []
                for item in images.reshape(-1):
                    data = item if isinstance(item, bytes) else bytes(item)
                    padded, mapping = letterbox(
                        decode_image(data, self.max_bytes, self.max_pixels), self.size
                    )
                    tensors.append(to_tensor(padded))
                    mappings.append(mapping)
                responses.append(
                    pb_utils.InferenceResponse(
                        output_tensors=[
                            pb_utils.Tensor("images", np.stack(tensors)),
                            pb_utils.Tensor("LETTERBOX", np.stack(mappings)),
                        ]
                    )
                )
            except ImageError as error:
                responses.append(
                    pb_utils.InferenceResponse(
                        error=pb_utils.TritonError(str(error), pb_utils.TritonError.INVALID_ARG)
                    )
                )
        return responses
