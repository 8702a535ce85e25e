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
