"""helpers.yolo (model loading, drawing) and the lesson code it builds on: notebook 03's
``preprocess`` / ``postprocess`` and notebook 01's ``decode`` (helpers.lessons), against Ultralytics."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import yolo
from helpers.lessons.yolo_client import postprocess, preprocess
from helpers.lessons.yolo_decode import (
    decode,
    match_detections,
    plant_boxes,
    ultralytics_detections,
)

BUS_SHAPE = (1080, 810)  # height, width of ultralytics/assets/bus.jpg


@pytest.fixture(scope="module")
def random_yolo() -> yolo.LoadedYolo:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", yolo.RandomWeightsWarning)
        return yolo.load_yolo("n")


@pytest.fixture(scope="module")
def bus() -> np.ndarray:
    return yolo.load_image(yolo.sample_image_path("bus.jpg"))


# --------------------------------------------------------------------------- pre-processing
# preprocess / postprocess are notebook 03's cells, decode notebook 01's (helpers.lessons).


def test_preprocess_matches_ultralytics_letterbox(bus: np.ndarray) -> None:
    from ultralytics.data.augment import LetterBox

    batch, letterbox = preprocess(bus)
    assert bus.shape[:2] == BUS_SHAPE
    assert batch.shape == (1, 3, 640, 640) and batch.dtype == np.float32
    assert letterbox["shape"] == BUS_SHAPE
    assert letterbox["pad"] == (80, 0)  # 810 * 640/1080 = 480 wide: 160 grey columns, 80 a side
    assert letterbox["gain"] == pytest.approx((480 / 810, 640 / 1080))
    expected = LetterBox(new_shape=(640, 640), auto=False)(image=bus)  # BGR uint8
    rgb = np.ascontiguousarray(expected[:, :, ::-1].transpose(2, 0, 1), np.float32) / np.float32(
        255
    )
    np.testing.assert_array_equal(batch[0], rgb)


def test_preprocess_of_a_wide_image_pads_top_and_bottom() -> None:
    image = np.zeros((100, 400, 3), np.uint8)
    image[..., 2] = 255  # pure red in OpenCV's BGR order
    batch, letterbox = preprocess(image, size=640)
    assert letterbox == {"gain": (1.6, 1.6), "pad": (0, 240), "shape": (100, 400)}
    np.testing.assert_array_equal(batch[0, 0, 240:400], 1.0)  # red first (RGB), in [0, 1]
    np.testing.assert_array_equal(batch[0, 1:, 240:400], 0.0)
    np.testing.assert_array_equal(batch[0, :, :240], np.float32(114) / np.float32(255))


def test_load_image_raises_for_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        yolo.load_image(tmp_path / "nope.jpg")


# --------------------------------------------------------------------------- decoding and NMS

PLANTED = [(50.0, 60.0, 250.0, 400.0), (300.0, 100.0, 420.0, 220.0), (310.0, 110.0, 430.0, 230.0)]
PLANTED_CLASSES = [0, 5, 2]  # the last two overlap (IoU ~0.7) but differ in class
PLANTED_SCORES = [0.91, 0.8, 0.55]


def test_planted_boxes_come_back_exactly_after_nms() -> None:
    output = plant_boxes(PLANTED, PLANTED_CLASSES, PLANTED_SCORES, duplicates=4)
    assert output.shape == (1, 84, 8400)
    assert (output[0, 4:].max(axis=0) > 0).sum() == 15  # 3 boxes + 4 near-duplicates each
    boxes, scores, class_ids = decode(output)
    np.testing.assert_allclose(boxes, PLANTED, atol=1e-4)
    np.testing.assert_allclose(scores, PLANTED_SCORES, atol=1e-6)
    assert class_ids.tolist() == PLANTED_CLASSES


def test_class_agnostic_nms_merges_overlapping_boxes_of_other_classes() -> None:
    output = plant_boxes(PLANTED, PLANTED_CLASSES, PLANTED_SCORES)
    iou = yolo.box_iou(PLANTED[1], PLANTED[2])
    _, _, class_ids = decode(output, iou=iou - 0.05, agnostic=True)
    assert class_ids.tolist() == [0, 5]


def test_decode_drops_scores_below_the_threshold_and_caps_the_count() -> None:
    output = plant_boxes(PLANTED, PLANTED_CLASSES, PLANTED_SCORES)
    _, scores, _ = decode(output, conf=0.6)
    assert scores.tolist() == pytest.approx([0.91, 0.8])
    _, scores, _ = decode(output, max_det=1)
    assert scores.tolist() == pytest.approx([0.91])


def test_decode_of_an_empty_output_returns_empty_arrays() -> None:
    boxes, scores, class_ids = decode(np.zeros((84, 8400), np.float32))
    assert boxes.shape == (0, 4) and scores.shape == (0,) and class_ids.shape == (0,)


def test_decode_rejects_a_batch() -> None:
    with pytest.raises(ValueError, match="one image"):
        decode(np.zeros((2, 84, 8400), np.float32))


def test_postprocess_maps_planted_boxes_onto_the_original_image(bus: np.ndarray) -> None:
    _, letterbox = preprocess(bus)
    output = plant_boxes(PLANTED, PLANTED_CLASSES, PLANTED_SCORES)
    detections = postprocess(output[0], letterbox, yolo.coco_names())
    gain_x, gain_y = letterbox[
        "gain"
    ]  # pad (80, 0): x moves, then both scale; clipped to the image
    expected = [
        [max(x1 - 80, 0) / gain_x, y1 / gain_y, (x2 - 80) / gain_x, y2 / gain_y]
        for x1, y1, x2, y2 in PLANTED
    ]
    np.testing.assert_allclose([d["box"] for d in detections], expected, atol=1e-3)
    assert expected[0] == pytest.approx([0.0, 101.25, 286.875, 675.0], abs=1e-3)
    assert [d["label"] for d in detections] == ["person", "bus", "car"]
    # the same boxes as notebook 01's decode, whose NMS it repeats
    boxes, scores, class_ids = decode(output)
    assert [d["class_id"] for d in detections] == class_ids.tolist()
    np.testing.assert_allclose([d["score"] for d in detections], scores, atol=1e-6)
    frame = yolo.detections_frame(detections)
    assert list(frame.columns) == ["label", "score", "class_id", "x1", "y1", "x2", "y2"]
    assert len(frame) == 3


def test_coco_names_come_from_the_ultralytics_dataset_yaml() -> None:
    names = yolo.coco_names()
    assert len(names) == 80
    assert (names[0], names[5], names[79]) == ("person", "bus", "toothbrush")


# --------------------------------------------------------------------------- the model


def test_random_weights_are_announced_loudly() -> None:
    with pytest.warns(yolo.RandomWeightsWarning, match="RANDOM WEIGHTS"):
        loaded = yolo.load_yolo("n")
    assert not loaded.pretrained and loaded.weights_path is None
    assert "yolo11n.yaml" in loaded.source
    assert "detections are NOT" in loaded.notice
    assert "⚠️" in loaded._repr_markdown_()
    assert loaded.names[0] == "person"


def test_random_weights_are_reproducible_and_depend_on_the_input(
    random_yolo: yolo.LoadedYolo, bus: np.ndarray
) -> None:
    batch, _ = preprocess(bus)
    output = yolo.torch_forward(random_yolo, batch)
    assert output.shape == (1, 84, 8400) and output.dtype == np.float32
    blank = yolo.torch_forward(random_yolo, np.zeros_like(batch))
    assert np.abs(output[0, :4] - blank[0, :4]).max() > 1.0  # BatchNorm calibration at work
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", yolo.RandomWeightsWarning)
        again = yolo.load_yolo("n")
    np.testing.assert_array_equal(yolo.torch_forward(again, batch), output)


def test_bad_size_and_missing_weights_raise(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="MODEL_SIZE"):
        yolo.load_yolo("q")
    with pytest.raises(FileNotFoundError, match="WEIGHTS"):
        yolo.load_yolo("n", weights=tmp_path / "missing.pt")


def test_weights_are_found_in_the_ultralytics_weights_folder(
    random_yolo: yolo.LoadedYolo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    random_yolo.model.save(tmp_path / "yolo11n.pt")
    monkeypatch.setattr(yolo, "ultralytics_weights_dir", lambda: tmp_path)
    assert yolo.weights_candidates("n")[0] == tmp_path / "yolo11n.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("error", yolo.RandomWeightsWarning)
        loaded = yolo.load_yolo("n")
    assert loaded.pretrained and loaded.weights_path == tmp_path / "yolo11n.pt"
    assert loaded.source == f"pretrained: {tmp_path / 'yolo11n.pt'}"
    given = yolo.load_yolo("n", weights=tmp_path / "yolo11n.pt")
    assert given.pretrained


def test_decoding_matches_ultralytics_nms_on_the_same_input(bus: np.ndarray) -> None:
    """Raise the class biases of a random model so it 'detects' hundreds of overlapping boxes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", yolo.RandomWeightsWarning)
        lively = yolo.load_yolo("n")
    with torch.no_grad():
        for branch in lively.model.model.model[-1].cv3:
            branch[-1].bias.fill_(-3.5)  # about 500 boxes above 0.25
    batch, _ = preprocess(bus)  # already 640x640 below: both pipelines see the same tensor
    padded = np.ascontiguousarray(
        (batch[0] * 255).round().astype(np.uint8).transpose(1, 2, 0)[:, :, ::-1]
    )
    batch, letterbox = preprocess(padded)
    ours = postprocess(yolo.torch_forward(lively, batch)[0], letterbox, lively.names)
    reference = ultralytics_detections(lively.model, padded, max_det=1000)
    assert 30 < len(reference) < 1000
    assert len(ours) == len(reference)
    matches = match_detections(ours, reference)
    assert matches["iou"].min() > 0.999
    assert (matches["reference_score"] - matches["our_score"]).abs().max() <= 2e-3


def test_pretrained_boxes_match_ultralytics_predictions(bus: np.ndarray) -> None:
    """Only where yolo11n.pt is on disk; never downloads."""
    path = next((p for p in yolo.weights_candidates("n") if p.is_file()), None)
    if path is None:
        pytest.skip("no yolo11n.pt on this machine (offline): nothing pretrained to compare")
    loaded = yolo.load_yolo("n", weights=path)
    batch, letterbox = preprocess(bus)
    ours = postprocess(yolo.torch_forward(loaded, batch)[0], letterbox, loaded.names)
    reference = ultralytics_detections(loaded.model, bus)
    confident = [d for d in reference if d["score"] >= 0.5]
    assert len(confident) >= 3  # bus.jpg: a bus and several people
    matches = match_detections(ours, confident)
    assert matches["iou"].min() >= 0.9, matches
    assert (matches["reference_score"] - matches["our_score"]).abs().max() <= 0.05
    assert {"bus", "person"} <= set(matches["label"])


# --------------------------------------------------------------------------- drawing


def test_draw_detections_draws_on_a_copy(bus: np.ndarray) -> None:
    detection = {"label": "bus", "class_id": 5, "score": 0.9, "box": [100.0, 200.0, 400.0, 600.0]}
    before = bus.copy()
    drawn = yolo.draw_detections(bus, [detection], banner="RANDOM WEIGHTS")
    np.testing.assert_array_equal(bus, before)
    assert drawn.shape == bus.shape and drawn.dtype == np.uint8
    assert (drawn[400, 99:102] != bus[400, 99:102]).any()  # left edge of the box
    np.testing.assert_array_equal(drawn[800, 600], bus[800, 600])  # far from box and banner
    assert tuple(drawn[5, 400]) == (0, 0, 200)  # the red banner
