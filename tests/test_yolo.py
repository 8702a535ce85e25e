"""Tests for helpers.yolo: model loading, pre-processing, decoding with NMS, drawing."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import yolo

BUS_SHAPE = (1080, 810)  # height, width of ultralytics/assets/bus.jpg


@pytest.fixture(scope="module")
def random_yolo() -> yolo.LoadedYolo:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", yolo.RandomWeightsWarning)
        return yolo.load_yolo("n")


@pytest.fixture(scope="module")
def bus() -> np.ndarray:
    return yolo.load_image(yolo.bus_image_path())


# --------------------------------------------------------------------------- pre-processing


def test_letterbox_matches_ultralytics_arithmetic(bus: np.ndarray) -> None:
    padded, info = yolo.letterbox(bus)
    assert bus.shape[:2] == BUS_SHAPE
    assert padded.shape == (640, 640, 3)
    assert info.original_shape == BUS_SHAPE
    assert info.pad == (80, 0)  # 810 * 640/1080 = 480 wide: 160 grey columns, 80 per side
    assert info.gain == pytest.approx((480 / 810, 640 / 1080))
    assert (padded[:, :80] == yolo.PAD_VALUE).all() and (padded[:, -80:] == yolo.PAD_VALUE).all()
    assert not (padded[:, 80:-80] == yolo.PAD_VALUE).all()


def test_letterbox_matches_ultralytics_letterbox(bus: np.ndarray) -> None:
    from ultralytics.data.augment import LetterBox

    expected = LetterBox(new_shape=(640, 640), auto=False)(image=bus)
    padded, _ = yolo.letterbox(bus)
    np.testing.assert_array_equal(padded, expected)


def test_letterbox_of_a_wide_image_pads_top_and_bottom() -> None:
    image = np.zeros((100, 400, 3), np.uint8)
    padded, info = yolo.letterbox(image, size=640)
    assert padded.shape == (640, 640, 3)
    assert info.pad == (0, 240) and info.gain == (1.6, 1.6)


def test_to_original_inverts_the_letterbox() -> None:
    info = yolo.Letterbox(
        original_shape=(1080, 810),
        input_shape=(640, 640),
        gain=(480 / 810, 640 / 1080),
        pad=(80, 0),
    )
    original = np.array([[100.0, 200.0, 400.0, 900.0]])
    in_input = original * [info.gain[0], info.gain[1], info.gain[0], info.gain[1]]
    in_input[:, [0, 2]] += 80
    np.testing.assert_allclose(info.to_original(in_input), original, atol=1e-3)
    clipped = info.to_original(np.array([[0.0, -10.0, 640.0, 700.0]]))
    np.testing.assert_allclose(clipped, [[0.0, 0.0, 810.0, 1080.0]])


def test_normalize_is_rgb_chw_float32_in_unit_range() -> None:
    image = np.zeros((2, 3, 3), np.uint8)
    image[..., 2] = 255  # pure red in OpenCV's BGR order
    tensor = yolo.normalize(image)
    assert tensor.shape == (3, 2, 3) and tensor.dtype == np.float32
    np.testing.assert_array_equal(tensor[0], 1.0)  # R first
    np.testing.assert_array_equal(tensor[1:], 0.0)


def test_preprocess_batches_images_of_different_sizes(bus: np.ndarray) -> None:
    small = np.full((50, 100, 3), 7, np.uint8)
    batch, infos = yolo.preprocess([bus, small])
    assert batch.shape == (2, 3, 640, 640) and batch.dtype == np.float32
    assert 0.0 <= batch.min() and batch.max() <= 1.0
    assert [i.original_shape for i in infos] == [BUS_SHAPE, (50, 100)]
    single, _ = yolo.preprocess(bus)
    np.testing.assert_array_equal(single[0], batch[0])


def test_load_image_raises_for_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        yolo.load_image(tmp_path / "nope.jpg")


# --------------------------------------------------------------------------- decoding and NMS

PLANTED = [(50.0, 60.0, 250.0, 400.0), (300.0, 100.0, 420.0, 220.0), (310.0, 110.0, 430.0, 230.0)]
PLANTED_CLASSES = [0, 5, 2]  # the last two overlap (IoU ~0.7) but differ in class
PLANTED_SCORES = [0.91, 0.8, 0.55]


def test_planted_boxes_come_back_exactly_after_nms() -> None:
    output = yolo.plant_boxes(PLANTED, PLANTED_CLASSES, PLANTED_SCORES, duplicates=4)
    assert output.shape == (1, 84, 8400)
    assert (output[0, 4:].max(axis=0) > 0).sum() == 15  # 3 boxes + 4 near-duplicates each
    boxes, scores, class_ids = yolo.decode(output)
    np.testing.assert_allclose(boxes, PLANTED, atol=1e-4)
    np.testing.assert_allclose(scores, PLANTED_SCORES, atol=1e-6)
    assert class_ids.tolist() == PLANTED_CLASSES


def test_class_agnostic_nms_merges_overlapping_boxes_of_other_classes() -> None:
    output = yolo.plant_boxes(PLANTED, PLANTED_CLASSES, PLANTED_SCORES)
    iou = yolo.box_iou(PLANTED[1], PLANTED[2])
    _, _, class_ids = yolo.decode(output, iou=iou - 0.05, agnostic=True)
    assert class_ids.tolist() == [0, 5]


def test_decode_drops_scores_below_the_threshold_and_caps_the_count() -> None:
    output = yolo.plant_boxes(PLANTED, PLANTED_CLASSES, PLANTED_SCORES)
    _, scores, _ = yolo.decode(output, conf=0.6)
    assert scores.tolist() == pytest.approx([0.91, 0.8])
    _, scores, _ = yolo.decode(output, max_det=1)
    assert scores.tolist() == pytest.approx([0.91])


def test_decode_of_an_empty_output_returns_empty_arrays() -> None:
    boxes, scores, class_ids = yolo.decode(np.zeros((84, 8400), np.float32))
    assert boxes.shape == (0, 4) and scores.shape == (0,) and class_ids.shape == (0,)


def test_decode_rejects_a_batch() -> None:
    with pytest.raises(ValueError, match="one image"):
        yolo.decode(np.zeros((2, 84, 8400), np.float32))


def test_postprocess_maps_planted_boxes_onto_the_original_image(bus: np.ndarray) -> None:
    _, info = yolo.letterbox(bus)
    output = yolo.plant_boxes(PLANTED, PLANTED_CLASSES, PLANTED_SCORES)
    names = yolo.coco_names()
    (detections,) = yolo.postprocess(output, [info], names)
    expected = info.to_original(np.array(PLANTED))
    np.testing.assert_allclose([d.box for d in detections], expected, atol=1e-3)
    assert [d.label for d in detections] == ["person", "bus", "car"]
    assert expected[0].tolist() == pytest.approx([0.0, 101.25, 286.875, 675.0], abs=1e-3)
    frame = yolo.detections_frame(detections)
    assert list(frame.columns) == ["label", "score", "class_id", "x1", "y1", "x2", "y2"]
    assert len(frame) == 3


def test_postprocess_checks_the_batch_against_the_letterboxes(bus: np.ndarray) -> None:
    _, info = yolo.letterbox(bus)
    with pytest.raises(ValueError, match="does not match"):
        yolo.postprocess(np.zeros((2, 84, 8400), np.float32), [info], {})


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
    batch, _ = yolo.preprocess(bus)
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
    padded, _ = yolo.letterbox(bus)  # already 640x640: both pipelines see the same tensor
    batch, infos = yolo.preprocess(padded)
    ours = yolo.postprocess(yolo.torch_forward(lively, batch), infos, lively.names, max_det=1000)[0]
    reference = yolo.ultralytics_detections(lively, padded, max_det=1000)
    assert 30 < len(reference) < 1000
    assert len(ours) == len(reference)
    matches = yolo.match_detections(ours, reference)
    assert matches["iou"].min() > 0.999
    assert (matches["reference_score"] - matches["our_score"]).abs().max() <= 2e-3


def test_pretrained_boxes_match_ultralytics_predictions(bus: np.ndarray) -> None:
    """Only where yolo11n.pt is on disk; never downloads."""
    path = next((p for p in yolo.weights_candidates("n") if p.is_file()), None)
    if path is None:
        pytest.skip("no yolo11n.pt on this machine (offline): nothing pretrained to compare")
    loaded = yolo.load_yolo("n", weights=path)
    batch, infos = yolo.preprocess(bus)
    ours = yolo.postprocess(yolo.torch_forward(loaded, batch), infos, loaded.names)[0]
    reference = yolo.ultralytics_detections(loaded, bus)
    confident = [d for d in reference if d.score >= 0.5]
    assert len(confident) >= 3  # bus.jpg: a bus and several people
    matches = yolo.match_detections(ours, confident)
    assert matches["iou"].min() >= 0.9, matches
    assert (matches["reference_score"] - matches["our_score"]).abs().max() <= 0.05
    assert {"bus", "person"} <= set(matches["label"])


# --------------------------------------------------------------------------- drawing


def test_draw_detections_draws_on_a_copy(bus: np.ndarray) -> None:
    detection = yolo.Detection(100.0, 200.0, 400.0, 600.0, 0.9, 5, "bus")
    before = bus.copy()
    drawn = yolo.draw_detections(bus, [detection], banner="RANDOM WEIGHTS")
    np.testing.assert_array_equal(bus, before)
    assert drawn.shape == bus.shape and drawn.dtype == np.uint8
    assert (drawn[400, 99:102] != bus[400, 99:102]).any()  # left edge of the box
    np.testing.assert_array_equal(drawn[800, 600], bus[800, 600])  # far from box and banner
    assert tuple(drawn[5, 400]) == (0, 0, 200)  # the red banner
