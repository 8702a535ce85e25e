# Generated from notebooks/01_onnx_export_and_inspection.ipynb by `make export`: do not edit.
# Edit the cells marked `#| export yolo_decode` there, then run `make export`.


# ---- cell 44
import cv2
import numpy as np

MAX_DETECTIONS = 300  # Ultralytics' max_det


def decode(
    output: np.ndarray,
    conf: float = 0.25,
    iou: float = 0.7,
    max_det: int = MAX_DETECTIONS,
    agnostic: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode one image's ``[4 + classes, anchors]`` output with OpenCV NMS (notebook 01).

    Rows 0-3 are box centre x, centre y, width, height in network-input pixels; the other rows
    are per-class scores (already sigmoid). Keeps each anchor's best class when its score is
    above ``conf``, then runs ``cv2.dnn.NMSBoxesBatched`` (per class, like Ultralytics;
    ``agnostic=True`` uses ``cv2.dnn.NMSBoxes`` across classes). Returns xyxy boxes
    ``[K, 4]``, scores ``[K]`` and class ids ``[K]``, best score first.
    """
    output = np.asarray(output, dtype=np.float32)
    if output.ndim == 3:
        if output.shape[0] != 1:
            raise ValueError(f"decode takes one image's output, got batch of {output.shape[0]}")
        output = output[0]
    if output.ndim != 2 or output.shape[0] < 5:
        raise ValueError(f"expected [4 + classes, anchors], got {output.shape}")
    class_scores = output[4:]
    class_ids = class_scores.argmax(axis=0)
    scores = class_scores[class_ids, np.arange(output.shape[1])]
    keep = scores > conf
    cx, cy, w, h = output[:4, keep]
    scores, class_ids = scores[keep], class_ids[keep]
    empty = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
    if scores.size == 0:
        return empty
    xywh = np.stack([cx - w / 2, cy - h / 2, w, h], axis=1)  # OpenCV wants (left, top, w, h)
    if agnostic:
        indices = cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), conf, iou)
    else:
        indices = cv2.dnn.NMSBoxesBatched(
            xywh.tolist(), scores.tolist(), class_ids.tolist(), conf, iou
        )  # no top_k: OpenCV applies it to the candidates *before* suppression
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    if indices.size == 0:
        return empty
    indices = indices[np.argsort(-scores[indices], kind="stable")][:max_det]
    boxes = xywh[indices].copy()
    boxes[:, 2:] += boxes[:, :2]
    return boxes, scores[indices], class_ids[indices].astype(np.int64)


# ---- cell decoder-checks
from collections.abc import Sequence

import numpy as np
import pandas as pd

from helpers.yolo import box_iou


def plant_boxes(
    boxes_xyxy: Sequence[Sequence[float]],
    class_ids: Sequence[int],
    scores: Sequence[float],
    num_classes: int = 80,
    anchors: int = 8400,
    duplicates: int = 3,
    seed: int = 0,
) -> np.ndarray:
    """A synthetic ``[1, 4 + classes, anchors]`` output holding the given boxes (notebook 01).

    Each planted box sits at a random anchor with its score, and ``duplicates`` near copies
    (shifted by a pixel or two, lower scores) sit at other anchors, as a real detector's
    neighbouring anchors would: NMS must keep exactly the planted boxes. All other anchors
    score zero.
    """
    rng = np.random.default_rng(seed)
    output = np.zeros((1, 4 + num_classes, anchors), dtype=np.float32)
    slots = iter(rng.permutation(anchors))
    for box, cid, score in zip(boxes_xyxy, class_ids, scores, strict=True):
        x1, y1, x2, y2 = box
        for copy in range(duplicates + 1):
            shift = 0.0 if copy == 0 else float(rng.uniform(-2, 2))
            slot = next(slots)
            output[0, :4, slot] = [(x1 + x2) / 2 + shift, (y1 + y2) / 2 - shift, x2 - x1, y2 - y1]
            output[0, 4 + cid, slot] = score if copy == 0 else score * (0.9 - 0.1 * copy)
    return output


def ultralytics_detections(
    model, image: np.ndarray, conf: float = 0.25, iou: float = 0.7, imgsz: int = 640, max_det: int = 300
) -> list[dict]:
    """Ultralytics' own predictions (``model``: an ``ultralytics.YOLO``) for a BGR image, as detection dicts."""
    result = model.predict(image, conf=conf, iou=iou, imgsz=imgsz, max_det=max_det, verbose=False)[0]
    boxes = result.boxes
    return [
        {"label": result.names[int(c)], "class_id": int(c), "score": float(s), "box": [float(v) for v in b]}
        for b, s, c in zip(boxes.xyxy.cpu().numpy(), boxes.conf.cpu().numpy(), boxes.cls.cpu().numpy())
    ]


def match_detections(ours: Sequence[dict], reference: Sequence[dict]) -> pd.DataFrame:
    """Pair each reference detection with our best same-class box by IoU (notebook 01)."""
    rows = []
    for ref in reference:
        same = [d for d in ours if d["class_id"] == ref["class_id"]]
        best = max(same, key=lambda d: box_iou(d["box"], ref["box"]), default=None)
        rows.append(
            {
                "label": ref["label"],
                "reference_score": round(ref["score"], 3),
                "our_score": round(best["score"], 3) if best else float("nan"),
                "iou": round(box_iou(best["box"], ref["box"]), 3) if best else 0.0,
            }
        )
    return pd.DataFrame(rows, columns=["label", "reference_score", "our_score", "iou"])
