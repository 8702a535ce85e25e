# Generated from notebooks/08_server_side_pipelines.ipynb by `make export`: do not edit.
# Edit the cells marked `#| export pipeline_client` there, then run `make export`.


# ---- cell 0990b1b8
import numpy as np
import tritonclient.http as httpclient


def detect_http(client: httpclient.InferenceServerClient, data: bytes, conf: float, model: str = "yolo11n_pipeline"):
    """Send an image file's bytes to a pipeline; return its boxes [K, 6] and labels (notebook 08)."""
    image = httpclient.InferInput("IMAGE", [1, 1], "BYTES")
    image.set_data_from_numpy(np.array([[data]], dtype=object))
    threshold = httpclient.InferInput("CONF", [1, 1], "FP32")
    threshold.set_data_from_numpy(np.array([[conf]], dtype=np.float32))
    result = client.infer(model, [image, threshold])
    boxes = result.as_numpy("DETECTIONS")[0]  # [K, 6]: x1, y1, x2, y2, score, class id
    labels = [label.decode() for label in result.as_numpy("LABELS")[0]]
    return boxes, labels
