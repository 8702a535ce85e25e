"""Decode YOLO11n's output on the server: boxes in original-image pixels out (notebook 08).

Self-contained: copy this folder into any model repository whose Python environment has
numpy and opencv-python. Nothing here imports the course's ``helpers``. Its decode and NMS have
twins in the notebooks: 01's ``decode`` and 03's ``postprocess`` cells (generated into
``helpers/lessons/``); tests/test_pipeline.py checks this model and 03's give the same boxes.

Inputs (per request): ``output0`` float32 [84, 8400] (4 box values in network-input pixels,
then 80 class scores), LETTERBOX float32 [6] from ``yolo11n_preprocess``, and optional CONF
and IOU thresholds. Each anchor keeps its best class when its score is above CONF, then
OpenCV's per-class NMS (``cv2.dnn.NMSBoxesBatched``, as Ultralytics does per class) keeps
the best boxes, at most ``max_det``, best score first. Outputs: DETECTIONS float32 [K, 6] =
x1, y1, x2, y2 (original pixels), score, class id; LABELS [K], the COCO class names. A
request that sends several images gets [n, K, 6] with K the longest list: shorter lists are
padded with rows of -1 and empty labels.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import triton_python_backend_utils as pb_utils

COCO_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat",
    "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack",
    "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball",
    "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket",
    "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair",
    "couch", "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse",
    "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier",
    "toothbrush",
)  # fmt: skip


def decode(output: np.ndarray, conf: float, iou: float, max_det: int) -> np.ndarray:
    """One image's [4 + classes, anchors] output -> [K, 6] xyxy, score, class (input pixels)."""
    class_scores = output[4:]
    class_ids = class_scores.argmax(axis=0)
    scores = class_scores[class_ids, np.arange(output.shape[1])]
    keep = scores > conf
    cx, cy, w, h = output[:4, keep]
    scores, class_ids = scores[keep], class_ids[keep]
    if scores.size == 0:
        return np.zeros((0, 6), np.float32)
    xywh = np.stack([cx - w / 2, cy - h / 2, w, h], axis=1)  # OpenCV wants (left, top, w, h)
    indices = cv2.dnn.NMSBoxesBatched(xywh.tolist(), scores.tolist(), class_ids.tolist(), conf, iou)
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    indices = indices[np.argsort(-scores[indices], kind="stable")][:max_det]
    boxes = xywh[indices].copy()
    boxes[:, 2:] += boxes[:, :2]
    return np.column_stack([boxes, scores[indices], class_ids[indices]]).astype(np.float32)


def to_original(rows: np.ndarray, letterbox: np.ndarray) -> np.ndarray:
    """Map the boxes of [K, 6] rows from network-input pixels back to the original image."""
    height, width, gain_x, gain_y, pad_left, pad_top = (float(v) for v in letterbox)
    rows = rows.copy()
    rows[:, [0, 2]] = ((rows[:, [0, 2]] - pad_left) / gain_x).clip(0, width)
    rows[:, [1, 3]] = ((rows[:, [1, 3]] - pad_top) / gain_y).clip(0, height)
    return rows


class TritonPythonModel:
    """Triton's entry point: one response per request."""

    def initialize(self, args: dict) -> None:
        parameters = json.loads(args["model_config"]).get("parameters", {})

        def value(key: str, default: str) -> str:
            return parameters.get(key, {}).get("string_value", default)

        self.conf = float(value("conf", "0.25"))
        self.iou = float(value("iou", "0.7"))
        self.max_det = int(value("max_det", "300"))

    def _threshold(self, request, name: str, default: float) -> float:
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        if tensor is None:
            return default
        value = float(tensor.as_numpy().reshape(-1)[0])
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be between 0 and 1, got {value}")
        return value

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            try:
                conf = self._threshold(request, "CONF", self.conf)
                iou = self._threshold(request, "IOU", self.iou)
                outputs = pb_utils.get_input_tensor_by_name(request, "output0").as_numpy()
                letterboxes = pb_utils.get_input_tensor_by_name(request, "LETTERBOX").as_numpy()
                rows = [
                    to_original(decode(output, conf, iou, self.max_det), letterbox)
                    for output, letterbox in zip(outputs, letterboxes)
                ]
                count = max((len(r) for r in rows), default=0)  # pad a batch to one shape
                detections = np.full((len(rows), count, 6), -1.0, np.float32)
                labels = np.full((len(rows), count), b"", dtype=object)
                for index, row in enumerate(rows):
                    detections[index, : len(row)] = row
                    labels[index, : len(row)] = [COCO_NAMES[int(c)].encode() for c in row[:, 5]]
                responses.append(
                    pb_utils.InferenceResponse(
                        output_tensors=[
                            pb_utils.Tensor("DETECTIONS", detections),
                            pb_utils.Tensor("LABELS", labels),
                        ]
                    )
                )
            except ValueError as error:
                responses.append(
                    pb_utils.InferenceResponse(
                        error=pb_utils.TritonError(str(error), pb_utils.TritonError.INVALID_ARG)
                    )
                )
        return responses
