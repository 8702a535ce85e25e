"""helpers.ort_optimize: the CPU variants stay within their stated tolerance of the FP32 model.

The model is the course's CI model, made the way notebook 01 makes it: YOLO11n from
yolo11n.yaml with random weights (BatchNorm calibrated on the sample images), exported to ONNX.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import ort_optimize as oo
from helpers import yolo
from helpers.lessons.optimized_models import (
    TOLERANCES,
    Tolerance,
    compare_outputs,
    within_tolerance,
)
from helpers.lessons.yolo_decode import plant_boxes
from helpers.model_config import read_config
from helpers.paths import MODEL_REPOSITORY


@pytest.fixture(scope="module")
def fp32_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from helpers.export import export_onnx

    repository = tmp_path_factory.mktemp("repository")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the RandomWeightsWarning is expected here
        result = export_onnx(yolo.load_yolo("n"), repository)
    return result.path


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    return oo.sample_batch(2)  # bus.jpg and zidane.jpg, letterboxed


@pytest.fixture(scope="module")
def reference(fp32_model: Path, batch: np.ndarray) -> np.ndarray:
    return oo.make_session(fp32_model, "disabled").run(None, {"images": batch})[0]


def test_sample_batch_is_real_letterboxed_images():
    images = oo.sample_batch(3)
    assert images.shape == (3, 3, 640, 640) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    np.testing.assert_array_equal(images[0], images[2])  # bus, zidane, bus
    assert not np.array_equal(images[0], images[1])


def test_online_levels_agree_with_the_reference(fp32_model, batch, reference):
    for level in ("basic", "extended", "all"):
        output = oo.make_session(fp32_model, level).run(None, {"images": batch})[0]
        comparison = compare_outputs(reference, output)
        assert within_tolerance(comparison, TOLERANCES["ortopt"]), (level, comparison)


def test_compare_outputs_on_planted_detections():
    boxes = [[100, 100, 200, 220], [300, 50, 420, 160], [10, 400, 90, 600]]
    planted = plant_boxes(boxes, [0, 5, 16], [0.9, 0.8, 0.7], duplicates=0)
    same = compare_outputs(planted, planted.copy())
    assert same["detections_ref"] == same["detections_other"] == 3
    assert same["detection_agreement"] == 1.0
    assert same["max_abs_box_px"] == 0.0 and same["top_k_anchor_agreement"] == 1.0

    moved = planted.copy()
    anchor = int(np.argmax(planted[0, 4 + 16]))  # the third box's best anchor
    moved[0, 0, anchor] += 70.0  # move its centre x far: IoU < 0.5
    changed = compare_outputs(planted, moved)
    assert changed["max_abs_box_px"] == pytest.approx(70.0)
    assert changed["detection_agreement"] == pytest.approx(2 / 3)

    silent = planted.copy()
    silent[:, 4:] = 0.0
    none = compare_outputs(planted, silent)
    assert none["detections_other"] == 0 and none["detection_agreement"] == 0.0
    nothing = compare_outputs(silent, silent)
    assert np.isnan(nothing["detection_agreement"])
    with pytest.raises(ValueError):
        compare_outputs(planted, planted[:, :80])


def test_tolerance_check():
    tolerance = Tolerance(box_mean_px=1.0, score_max=0.1, box_max_px=5.0)
    ok = {"mean_abs_box_px": 0.5, "max_abs_box_px": 4.0, "max_abs_score": 0.05}
    assert within_tolerance(ok, tolerance)
    assert not within_tolerance({**ok, "max_abs_box_px": 6.0}, tolerance)
    assert not within_tolerance({**ok, "max_abs_score": 0.2}, tolerance)
    assert within_tolerance({**ok, "max_abs_box_px": 99.0}, Tolerance(1.0, 0.1))


def test_time_sessions_interleaves_and_latency_table_computes_speedups(fp32_model):
    sessions = {
        "fp32": oo.make_session(fp32_model),
        "noopt": oo.make_session(fp32_model, "disabled"),
    }
    times = oo.time_sessions(sessions, oo.sample_batch(1), repeats=2, warmup=1)
    assert times["variant"].tolist() == ["fp32", "noopt", "fp32", "noopt"]
    assert (times["latency_ms"] > 0).all()
    synthetic = pd.DataFrame(
        {
            "variant": ["a", "b"] * 3 + ["a", "b"] * 3,
            "batch": [1] * 6 + [4] * 6,
            "run": [0, 0, 1, 1, 2, 2] * 2,
            "latency_ms": [10, 20, 10, 20, 10, 20, 40, 20, 40, 20, 40, 20],
        }
    )
    table = oo.latency_table(synthetic, baseline="a")
    assert table.loc[("b", 1), "speedup_vs_a"] == pytest.approx(0.5)
    assert table.loc[("b", 4), "speedup_vs_a"] == pytest.approx(2.0)
    assert table.loc[("a", 4), "images_per_s"] == pytest.approx(100.0)


def test_install_model_needs_the_committed_config(tmp_path, fp32_model):
    with pytest.raises(FileNotFoundError, match="config.pbtxt"):
        oo.install_model(fp32_model, "nothing_here", model_repository=tmp_path)
    (tmp_path / "variant").mkdir()
    (tmp_path / "variant" / "config.pbtxt").write_text('platform: "onnxruntime_onnx"\n')
    target = oo.install_model(fp32_model, "variant", model_repository=tmp_path)
    assert target == tmp_path / "variant" / "1" / "model.onnx"
    assert target.read_bytes() == fp32_model.read_bytes()


@pytest.mark.parametrize("model", [oo.ORTOPT_MODEL, oo.INT8_MODEL])
def test_committed_cpu_variant_configs_mirror_yolo11n_onnx(model):
    base = read_config(MODEL_REPOSITORY / "yolo11n_onnx")
    config = read_config(MODEL_REPOSITORY / model)
    assert config.name == model
    assert config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == base.max_batch_size == 8
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [
        ("images", base.input[0].data_type, [3, 640, 640])
    ]
    assert [(t.name, t.data_type, list(t.dims)) for t in config.output] == [
        ("output0", base.output[0].data_type, [84, 8400])
    ]
    assert config.HasField("dynamic_batching")
    assert [(g.kind, g.count) for g in config.instance_group] == [(base.instance_group[0].kind, 1)]


def test_committed_tensorrt_config():
    config = read_config(MODEL_REPOSITORY / "yolo11n_trt")
    assert config.name == "yolo11n_trt" and config.platform == "tensorrt_plan"
    assert config.max_batch_size == 8
    assert [t.name for t in config.input] == ["images"]
    assert [t.name for t in config.output] == ["output0"]
    assert config.HasField("dynamic_batching")
