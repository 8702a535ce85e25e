"""Server-side pipelines (notebook 08): bytes in, boxes out, by ensemble and by BLS.

Against a real embedded Triton serving the committed ``yolo11n_preprocess``,
``yolo11n_postprocess``, ``yolo11n_pipeline`` (ensemble) and ``yolo11n_bls`` folders with a
YOLO11n export. Offline the weights are random and score almost every box below 0.01, so requests
send ``CONF`` = 0.001: the boxes are meaningless but many, which is what comparing
pipelines needs.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from helpers.lessons.yolo_client import postprocess, preprocess
from helpers.server import TritonServer
from helpers.statistics import model_stats, settled_stats
from helpers.yolo import coco_names, sample_image_path
from tests.reliability_models import pipeline_repository

CONF = 0.001


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pipeline_repository(tmp_path_factory)


@pytest.fixture(scope="module")
def server(repository: Path):
    models = ["yolo11n_onnx", "yolo11n_preprocess", "yolo11n_postprocess"]
    with TritonServer(
        repository, models=[*models, "yolo11n_pipeline", "yolo11n_bls"], cache_size=64 << 20
    ) as running:
        yield running


def encoded(image: np.ndarray, ext: str) -> bytes:
    ok, data = cv2.imencode(ext, image)
    assert ok
    return data.tobytes()


@pytest.fixture(scope="module")
def images() -> dict[str, bytes]:
    """Six files: JPEG, PNG and WebP, landscape, portrait and small."""
    bus = cv2.imread(str(sample_image_path("bus.jpg")))
    zidane = cv2.imread(str(sample_image_path("zidane.jpg")))
    return {
        "bus.jpg": sample_image_path("bus.jpg").read_bytes(),
        "zidane.jpg": sample_image_path("zidane.jpg").read_bytes(),
        "bus.png": encoded(bus, ".png"),
        "zidane.webp": encoded(zidane, ".webp"),
        "bus_crop.jpg": encoded(bus[100:700, 50:400], ".jpg"),
        "bus_small_flipped.png": encoded(cv2.resize(bus[:, ::-1], (270, 360)), ".png"),
    }


def ask(
    client, model: str, data: bytes, conf: float = CONF, **kwargs
) -> tuple[np.ndarray, list[str]]:
    """One image through ``model``: DETECTIONS [K, 6] and the labels."""
    image = httpclient.InferInput("IMAGE", [1, 1], "BYTES")
    image.set_data_from_numpy(np.array([[data]], dtype=object))
    threshold = httpclient.InferInput("CONF", [1, 1], "FP32")
    threshold.set_data_from_numpy(np.array([[conf]], dtype=np.float32))
    result = client.infer(model, [image, threshold], **kwargs)
    return result.as_numpy("DETECTIONS")[0], [b.decode() for b in result.as_numpy("LABELS")[0]]


def client_side(model_file: Path, data: bytes) -> np.ndarray:
    """Notebook 03's pipeline in this process: decode, letterbox, ONNX Runtime, decode + NMS."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    batch, letterbox = preprocess(image)
    output = ort.InferenceSession(str(model_file)).run(None, {"images": batch})[0]
    detections = postprocess(output[0], letterbox, coco_names(), conf=CONF)
    rows = [[*d["box"], d["score"], d["class_id"]] for d in detections]
    return np.array(rows, np.float32).reshape(-1, 6)


def test_ensemble_bls_and_client_side_find_the_same_boxes(server, repository, images):
    with_boxes = 0
    with server.http_client() as client:
        for name, data in images.items():
            expected = client_side(repository / "yolo11n_onnx" / "1" / "model.onnx", data)
            with_boxes += len(expected) > 0
            for model in ("yolo11n_pipeline", "yolo11n_bls"):
                found, labels = ask(client, model, data)
                assert found.shape == expected.shape, (name, model)
                np.testing.assert_allclose(
                    found[:, :5], expected[:, :5], atol=0.05, err_msg=f"{name} {model}"
                )
                assert (found[:, 5] == expected[:, 5]).all(), (name, model)
                assert labels == [coco_names()[int(c)] for c in expected[:, 5]]
    assert with_boxes >= 5, "too few images with boxes to compare the pipelines"


def too_many_pixels(width: int, height: int) -> bytes:
    """A small PNG (a few hundred kB) that decodes to ``width`` x ``height`` black pixels."""
    return encoded(np.zeros((height, width, 3), np.uint8), ".png")


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (b"", "IMAGE is empty (0 bytes)"),
        (b"GIF89a is what it says, but it is not" * 4, "not an image OpenCV can decode"),
        ("truncated", "not an image OpenCV can decode"),
        ("huge", "8000x6000 pixels, above the limit of 40000000"),
        # 144 MP: OpenCV refuses it before decoding; the course's message, not OpenCV's
        ("huger", "IMAGE has more than 100000000 pixels, above the limit of 40000000"),
    ],
)
@pytest.mark.parametrize("model", ["yolo11n_pipeline", "yolo11n_bls"])
def test_a_bad_image_fails_alone_while_a_good_one_is_answered(server, images, bad, message, model):
    """A client's bad image is a 400 naming the step, and only its own request fails."""
    if bad == "truncated":
        bad = images["bus.jpg"][:3000]
    elif bad == "huge":
        bad = too_many_pixels(8000, 6000)
    elif bad == "huger":
        bad = too_many_pixels(12000, 12000)

    def alone(data: bytes):  # a client per thread: tritonclient's clients are not thread-safe
        with server.http_client() as client:
            return ask(client, model, data)

    with ThreadPoolExecutor(4) as pool:
        goods = [pool.submit(alone, images["zidane.jpg"]) for _ in range(3)]
        failing = pool.submit(alone, bad)
        with pytest.raises(InferenceServerException, match="yolo11n_preprocess|IMAGE") as error:
            failing.result()
        assert message in str(error.value)
        assert "Assertion failed" not in str(error.value)
        assert error.value.status() == "400"
        assert all(len(g.result()[0]) > 0 for g in goods)
    with server.http_client() as client:  # the server keeps serving
        assert len(ask(client, model, images["bus.jpg"])[0]) > 0


def test_bls_names_the_step_that_failed(server, images):
    with server.http_client() as client:
        with pytest.raises(InferenceServerException, match="^.*yolo11n_preprocess: IMAGE is empty"):
            ask(client, "yolo11n_bls", b"")
        # yolo11n_torchscript is in the repository but not loaded: the detector step fails.
        with pytest.raises(
            InferenceServerException,
            match="yolo11n_torchscript: .*unknown model|yolo11n_torchscript: .*not",
        ):
            ask(
                client,
                "yolo11n_bls",
                images["bus.jpg"],
                parameters={"detector": "yolo11n_torchscript"},
            )
        with pytest.raises(InferenceServerException, match="unknown detector 'nope'"):
            ask(client, "yolo11n_bls", images["bus.jpg"], parameters={"detector": "nope"})


#: The BLS model's two detectors.
DETECTORS = ("yolo11n_onnx", "yolo11n_torchscript")


def test_bls_chooses_the_detector_per_request(server, images):
    server.load_model("yolo11n_torchscript")
    try:
        with server.http_client() as client:
            before = [model_stats(client, m).success_count for m in DETECTORS]
            found, _ = ask(
                client,
                "yolo11n_bls",
                images["bus.jpg"],
                parameters={"detector": "yolo11n_torchscript"},
            )
            # TorchScript's count catches up a moment after its answer; ONNX's must not move.
            settled_stats(client, "yolo11n_torchscript", before[1] + 1)
            after = [model_stats(client, m).success_count for m in DETECTORS]
        assert after == [before[0], before[1] + 1]  # only TorchScript ran
        assert len(found) > 0
    finally:
        server.unload_model("yolo11n_torchscript")


def test_bls_skips_the_detector_for_a_tiny_image(server, images):
    tiny = encoded(np.full((20, 30, 3), 127, np.uint8), ".png")
    with server.http_client() as client:
        before = model_stats(client, "yolo11n_onnx").success_count
        found, labels = ask(client, "yolo11n_bls", tiny)
        after = model_stats(client, "yolo11n_onnx").success_count
    assert found.shape == (0, 6) and labels == []
    assert after == before


def test_the_same_image_twice_is_a_cache_hit(server):
    bus = cv2.imread(str(sample_image_path("bus.jpg")))
    data = encoded(cv2.rotate(bus, cv2.ROTATE_90_CLOCKWISE), ".jpg")  # sent by no other test
    with server.http_client() as client:

        def cache_counts(requests: int) -> tuple[int, int]:
            """Hits and misses once ``requests`` more requests are counted (just after answers)."""
            stats = settled_stats(client, "yolo11n_pipeline", before.success_count + requests)
            return stats.cache_hit_count, stats.cache_miss_count

        before = model_stats(client, "yolo11n_pipeline")
        hits, misses = before.cache_hit_count, before.cache_miss_count
        first, _ = ask(client, "yolo11n_pipeline", data)
        assert cache_counts(1) == (hits, misses + 1)
        second, _ = ask(client, "yolo11n_pipeline", data)
        assert cache_counts(2) == (hits + 1, misses + 1)
    assert len(first) > 0  # Triton 2.51 does not cache an empty output
    np.testing.assert_array_equal(first, second)


def test_response_cache_flags_name_the_wheels_cache_folder():
    from helpers.server import find_embedded_triton, response_cache_arguments

    folder = find_embedded_triton().cache_directory
    assert (folder / "local" / "libtritoncache_local.so").is_file()
    assert response_cache_arguments(1 << 20, folder) == [
        "--cache-config=local,size=1048576",
        f"--cache-directory={folder}",  # not --cache-dir, which tritonserver 2.51 refuses
    ]
    with pytest.raises(ValueError, match="at least 1024 bytes"):
        response_cache_arguments(100)
