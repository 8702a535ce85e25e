# Generated from notebooks/03_triton_serving.ipynb by `make export`: do not edit.
# Edit the cells marked `#| export yolo_client` there, then run `make export`.


# ---- cell 40
import cv2
import numpy as np


def preprocess(image: np.ndarray, size: int = 640) -> tuple[np.ndarray, dict]:
    """BGR image -> float32 [1, 3, size, size] RGB in [0, 1], letterboxed, and how (notebook 03)."""
    height, width = image.shape[:2]
    ratio = min(size / height, size / width)
    new_w, new_h = round(width * ratio), round(height * ratio)
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    left, top = round((size - new_w) / 2 - 0.1), round((size - new_h) / 2 - 0.1)
    right, bottom = size - new_w - left, size - new_h - top
    grey = (114, 114, 114)
    padded = cv2.copyMakeBorder(resized, top, bottom, left, right, cv2.BORDER_CONSTANT, value=grey)
    chw = np.ascontiguousarray(padded[:, :, ::-1].transpose(2, 0, 1), dtype=np.float32)  # RGB
    letterbox = {
        "gain": (new_w / width, new_h / height),
        "pad": (left, top),
        "shape": (height, width),
    }
    return chw[np.newaxis] / np.float32(255), letterbox


# ---- cell 50
import cv2
import numpy as np
import tritonclient.grpc as grpcclient


def postprocess(
    output: np.ndarray,
    letterbox: dict,
    names: dict[int, str],
    conf: float = 0.25,
    iou: float = 0.7,
) -> list[dict]:
    """One image's YOLO11 output [84, 8400] -> detections in image pixels, best first (notebook 03)."""
    class_scores = output[4:]
    class_ids = class_scores.argmax(axis=0)
    scores = class_scores.max(axis=0)
    keep = scores > conf
    cx, cy, w, h = output[:4, keep]
    xywh = np.stack([cx - w / 2, cy - h / 2, w, h], axis=1)  # OpenCV's (left, top, w, h)
    scores, class_ids = scores[keep], class_ids[keep]
    kept = cv2.dnn.NMSBoxesBatched(xywh.tolist(), scores.tolist(), class_ids.tolist(), conf, iou)
    kept = np.asarray(kept, dtype=np.int64).reshape(-1)
    kept = kept[np.argsort(-scores[kept], kind="stable")]
    boxes = np.concatenate([xywh[kept, :2], xywh[kept, :2] + xywh[kept, 2:]], axis=1)
    (gain_x, gain_y), (pad_x, pad_y) = letterbox["gain"], letterbox["pad"]
    height, width = letterbox["shape"]
    boxes[:, [0, 2]] = ((boxes[:, [0, 2]] - pad_x) / gain_x).clip(0, width)
    boxes[:, [1, 3]] = ((boxes[:, [1, 3]] - pad_y) / gain_y).clip(0, height)
    return [
        {"label": names[int(c)], "class_id": int(c), "score": float(s), "box": b.tolist()}
        for b, s, c in zip(boxes, scores[kept], class_ids[kept])
    ]


def detect(
    client: grpcclient.InferenceServerClient,
    model: str,
    image: np.ndarray,
    names: dict[int, str],
    conf: float = 0.25,
    iou: float = 0.7,
) -> list[dict]:
    """Detect objects in a BGR image with a YOLO11 model served by Triton, over gRPC (notebook 03)."""
    meta = client.get_model_metadata(model, as_json=True)
    input_name, output_name = meta["inputs"][0]["name"], meta["outputs"][0]["name"]
    batch, letterbox = preprocess(image)
    tensor = grpcclient.InferInput(input_name, list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch)
    wanted = grpcclient.InferRequestedOutput(output_name)
    result = client.infer(model, [tensor], outputs=[wanted])
    return postprocess(result.as_numpy(output_name)[0], letterbox, names, conf, iou)
