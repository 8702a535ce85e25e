"""YOLO11 around the lesson code: get a model, sample images, compare and draw detections (notebook 01).

The pre- and post-processing a client writes live in the notebooks' cells and are generated
into ``helpers.lessons``: ``preprocess`` / ``postprocess`` / ``detect`` (notebook 03,
``helpers.lessons.yolo_client``), ``decode`` and its checks (notebook 01,
``helpers.lessons.yolo_decode``). A detection is the dict ``postprocess`` returns:
``{"label", "class_id", "score", "box"}`` with ``box`` = ``[x1, y1, x2, y2]`` in original-image
pixels.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import pandas as pd

from helpers.lessons.yolo_client import preprocess
from helpers.paths import REPO_ROOT

if TYPE_CHECKING:  # ultralytics and torch are slow to import; only the loaders need them.
    import torch
    from ultralytics import YOLO

#: The sizes Ultralytics publishes for YOLO11 (nano to extra large).
YOLO_SIZES: tuple[str, ...] = ("n", "s", "m", "l", "x")
#: Square network input side the course exports and serves (pixels).
INPUT_SIZE: int = 640
#: Defaults of Ultralytics ``predict`` (confidence threshold, NMS IoU threshold).
CONF_THRESHOLD: float = 0.25
IOU_THRESHOLD: float = 0.7


class RandomWeightsWarning(UserWarning):
    """Raised as a warning when YOLO11 runs with random weights (introduced in notebook 01)."""


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class LoadedYolo:
    """A YOLO11 model and where its weights came from (introduced in notebook 01)."""

    model: YOLO
    size: str
    source: str
    pretrained: bool
    weights_path: Path | None = None

    @property
    def names(self) -> dict[int, str]:
        """Class id -> class name (COCO's 80 classes for the official models)."""
        return dict(self.model.names)

    @property
    def notice(self) -> str:
        """One paragraph saying which case this is and what it means for the results."""
        if self.pretrained:
            return (
                f"YOLO11{self.size} with pretrained weights ({self.weights_path}). "
                "Timings and detections are both real."
            )
        return (
            f"RANDOM WEIGHTS: YOLO11{self.size} was built from yolo11{self.size}.yaml because no "
            "pretrained weights file was found. Every timing in this notebook is real (the network "
            "does exactly the same arithmetic), but detections are NOT: boxes, classes and scores "
            "are meaningless. Give a weights file (WEIGHTS = 'path/to/yolo11n.pt'), put it in the "
            f"Ultralytics weights folder ({ultralytics_weights_dir()}), or allow the download."
        )

    def _repr_markdown_(self) -> str:
        if self.pretrained:
            return f"**Model:** {self.notice}"
        return f"> ## ⚠️ {self.notice}"


def ultralytics_weights_dir() -> Path:
    """The folder Ultralytics looks in for weights (its ``weights_dir`` setting) (notebook 01)."""
    from ultralytics.utils import SETTINGS

    return Path(SETTINGS["weights_dir"])


def weights_candidates(size: str = "n") -> list[Path]:
    """Where ``load_yolo`` looks for ``yolo11<size>.pt``, in order (introduced in notebook 01)."""
    name = f"yolo11{_check_size(size)}.pt"
    return [ultralytics_weights_dir() / name, REPO_ROOT / name, REPO_ROOT / "weights" / name]


def load_yolo(
    size: str = "n",
    weights: str | os.PathLike[str] | None = None,
    *,
    download: bool = False,
) -> LoadedYolo:
    """Return YOLO11 of ``size``: pretrained if possible, else random weights (notebook 01).

    Order: ``weights`` (a path given by the user; missing -> ``FileNotFoundError``), the
    Ultralytics weights folder and the checkout (``weights_candidates``), a download into the
    Ultralytics weights folder when ``download`` is true and Ultralytics sees a network, and
    finally the architecture from ``yolo11<size>.yaml`` with random weights drawn from seed 0
    (with a ``RandomWeightsWarning``). The download is opt-in so CI never reaches for it.
    """
    import torch
    from ultralytics import YOLO

    size = _check_size(size)
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"WEIGHTS={str(weights)!r}: no such file")
        return _pretrained(YOLO(str(path)), size, path)
    for path in weights_candidates(size):
        if path.is_file():
            return _pretrained(YOLO(str(path)), size, path)
    if download:
        from ultralytics.utils import is_online
        from ultralytics.utils.downloads import attempt_download_asset

        if is_online():
            target = ultralytics_weights_dir() / f"yolo11{size}.pt"
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                path = Path(attempt_download_asset(target))
            except Exception as error:  # noqa: BLE001 - any network failure falls back to random
                warnings.warn(f"download of {target.name} failed: {error}", stacklevel=2)
            else:
                if path.is_file():
                    return _pretrained(YOLO(str(path)), size, path, downloaded=True)

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = YOLO(f"yolo11{size}.yaml", task="detect")
    model.model.names = coco_names()  # the yaml has no names: label classes as COCO does
    calibrate_batchnorm(model.model)
    loaded = LoadedYolo(
        model=model,
        size=size,
        source=(
            f"random weights from yolo11{size}.yaml (seed 0; BatchNorm statistics "
            "calibrated on the Ultralytics sample images)"
        ),
        pretrained=False,
    )
    warnings.warn(loaded.notice, RandomWeightsWarning, stacklevel=2)
    return loaded


def calibrate_batchnorm(network: torch.nn.Module) -> None:
    """Set a random network's BatchNorm statistics from the sample images (notebook 01).

    Freshly initialised BatchNorm layers assume every activation has mean 0 and variance 1.
    They do not, so through ~100 random layers the signal fades away and the output hardly
    depends on the image, which would make any comparison between runtimes meaningless. One
    training-mode forward pass over ``bus.jpg`` and ``zidane.jpg`` (and their mirror images)
    records the real statistics; the weights stay random.
    """
    import torch

    images = [load_image(sample_image_path(n)) for n in ("bus.jpg", "zidane.jpg")]
    pictures = images + [image[:, ::-1] for image in images]
    batch = np.concatenate([preprocess(picture, INPUT_SIZE)[0] for picture in pictures])
    norms = [m for m in network.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average: exactly this batch's statistics
    network.train()
    try:
        with torch.no_grad():
            network(torch.from_numpy(batch))
    finally:
        network.eval()
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum


def coco_names() -> dict[int, str]:
    """COCO's 80 class names, read from the ``coco.yaml`` that ships with Ultralytics (notebook 01)."""
    import ultralytics
    import yaml

    path = Path(ultralytics.__file__).parent / "cfg" / "datasets" / "coco.yaml"
    names = yaml.safe_load(path.read_text(encoding="utf-8"))["names"]
    return {int(k): str(v) for k, v in names.items()}


def torch_forward(model: LoadedYolo | torch.nn.Module, batch: np.ndarray) -> np.ndarray:
    """Run YOLO11 or a TorchScript module on an NCHW batch; returns ``[N, 84, 8400]`` (notebook 01)."""
    import torch

    network = (model.model.model if isinstance(model, LoadedYolo) else model).eval()
    with torch.inference_mode():
        output = network(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)))
    if isinstance(output, (tuple, list)):  # eval mode returns (decoded, raw feature maps)
        output = output[0]
    return output.numpy()


def _check_size(size: str) -> str:
    if size not in YOLO_SIZES:
        raise ValueError(f"MODEL_SIZE must be one of {YOLO_SIZES}, got {size!r}")
    return size


def _pretrained(model: YOLO, size: str, path: Path, downloaded: bool = False) -> LoadedYolo:
    how = "downloaded to" if downloaded else "pretrained:"
    return LoadedYolo(
        model=model,
        size=size,
        source=f"{how} {path}",
        pretrained=True,
        weights_path=path,
    )


# --------------------------------------------------------------------------- images in


def sample_image_path(name: str = "bus.jpg") -> Path:
    """An image that ships with Ultralytics: ``bus.jpg`` or ``zidane.jpg`` (notebook 01)."""
    from ultralytics.utils import ASSETS

    path = Path(ASSETS) / name
    if not path.is_file():
        raise FileNotFoundError(f"{name} is not among the Ultralytics assets in {ASSETS}")
    return path


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as BGR uint8 ``[H, W, 3]``; raise if it cannot be read (notebook 01).

    A missing file raises FileNotFoundError; a file that is not an image, or a damaged one,
    ValueError naming it. (OpenCV alone decodes a truncated JPEG to a picture whose missing
    part is grey, and only prints a warning.)
    """
    from PIL import Image, UnidentifiedImageError

    if not Path(path).is_file():
        raise FileNotFoundError(f"no image file at {path}")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot read an image from {path}: not an image file OpenCV can decode")
    try:
        with Image.open(path) as decoded:
            decoded.load()  # decodes every byte: raises on a truncated or damaged file
    except (UnidentifiedImageError, Image.DecompressionBombError):
        pass  # a format or size Pillow does not judge: OpenCV's decoding stands
    except (OSError, SyntaxError) as error:
        raise ValueError(f"{path} is damaged: {error}") from error
    return image


# --------------------------------------------------------------------------- detections out


def detections_frame(detections: Sequence[dict]) -> pd.DataFrame:
    """Detections as a DataFrame (label, score, class_id, x1, y1, x2, y2) (notebook 01)."""
    columns = ["label", "score", "class_id", "x1", "y1", "x2", "y2"]
    rows = [
        {"label": d["label"], "score": d["score"], "class_id": d["class_id"]}
        | dict(zip(("x1", "y1", "x2", "y2"), d["box"], strict=True))
        for d in detections
    ]
    return pd.DataFrame(rows, columns=columns).round(
        {"score": 3, "x1": 1, "y1": 1, "x2": 1, "y2": 1}
    )


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two xyxy boxes (introduced in notebook 01)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def draw_detections(
    image: np.ndarray, detections: Sequence[dict], banner: str | None = None
) -> np.ndarray:
    """Draw labelled boxes (and an optional red banner) on a copy of a BGR image (notebook 01).

    The boxes are Ultralytics' own drawing (``Annotator``, its colour per class).
    """
    from ultralytics.utils.plotting import Annotator, colors

    annotator = Annotator(image.copy())
    for det in detections:
        label = f"{det['label']} {det['score']:.2f}"
        annotator.box_label(det["box"], label, color=colors(det["class_id"], bgr=True))
    canvas = np.ascontiguousarray(annotator.result())
    if banner:
        font = cv2.FONT_HERSHEY_SIMPLEX
        (unit_w, _), _ = cv2.getTextSize(banner, font, 1.0, 2)
        scale = min(sum(canvas.shape[:2]) / 1500, (canvas.shape[1] - 12) / unit_w)  # fit the width
        (_, th), base = cv2.getTextSize(banner, font, scale, 2)
        cv2.rectangle(canvas, (0, 0), (canvas.shape[1], th + base + 12), (0, 0, 200), -1)
        cv2.putText(canvas, banner, (6, th + 6), font, scale, (255, 255, 255), 2, cv2.LINE_AA)
    return canvas


def to_rgb(image_bgr: np.ndarray) -> np.ndarray:
    """BGR (OpenCV) -> RGB (matplotlib) (introduced in notebook 01)."""
    return cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
