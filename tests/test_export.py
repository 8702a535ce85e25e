"""Tests for helpers.export and helpers.netron_view.

The model is exported once per module into a temporary repository; the real
model_repository is only read (its committed config.pbtxt files).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from helpers import export, yolo
from helpers.lessons.yolo_client import preprocess
from helpers.netron_view import NetronServer
from helpers.ort_optimize import make_session, op_counts
from helpers.paths import MODEL_REPOSITORY


@pytest.fixture(scope="module")
def loaded() -> yolo.LoadedYolo:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", yolo.RandomWeightsWarning)
        return yolo.load_yolo("n")


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model_repository")


@pytest.fixture(scope="module")
def onnx_export(loaded: yolo.LoadedYolo, repository: Path) -> export.ExportResult:
    return export.export_onnx(loaded, repository)


@pytest.fixture(scope="module")
def torchscript_export(loaded: yolo.LoadedYolo, repository: Path) -> export.ExportResult:
    return export.export_torchscript(loaded, repository)


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    images = [yolo.load_image(yolo.sample_image_path(n)) for n in ("bus.jpg", "zidane.jpg")]
    return np.concatenate([preprocess(image)[0] for image in images])


# --------------------------------------------------------------------------- what was exported


def test_onnx_lands_in_the_repository_with_a_sidecar(
    onnx_export: export.ExportResult, repository: Path
) -> None:
    assert onnx_export.action == "created"
    assert onnx_export.path == repository / "yolo11n_onnx" / "1" / "model.onnx"
    sidecar = json.loads(export.sidecar_path(onnx_export.path).read_text())
    assert sidecar["sha256"] == export.sha256_file(onnx_export.path)
    assert sidecar["opset"] == export.DEFAULT_OPSET
    assert "yolo11n.yaml" in sidecar["source"] and sidecar["pretrained"] is False
    assert not any(repository.rglob("*.partial*"))


def _shape(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def test_onnx_passes_the_checker_with_the_stated_opset(onnx_export: export.ExportResult) -> None:
    onnx.checker.check_model(str(onnx_export.path), full_check=True)
    proto = onnx.load(str(onnx_export.path))
    assert {o.domain or "ai.onnx": o.version for o in proto.opset_import} == {
        "ai.onnx": export.DEFAULT_OPSET
    }
    assert 7 <= proto.ir_version <= 10
    assert proto.producer_name == "pytorch"
    assert onnx_export.path.stat().st_size > 5_000_000
    assert {p.key: p.value for p in proto.metadata_props}["stride"] == "32"


def test_onnx_inputs_and_outputs_have_the_names_triton_expects(
    onnx_export: export.ExportResult,
) -> None:
    graph = onnx.load(str(onnx_export.path)).graph
    assert [(v.name, _shape(v)) for v in graph.input] == [
        ("images", ["batch", 3, "height", "width"])
    ]
    assert [(v.name, _shape(v)) for v in graph.output] == [("output0", ["batch", 84, "anchors"])]
    for value in (*graph.input, *graph.output):
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    first_dim = graph.input[0].type.tensor_type.shape.dim[0]
    assert first_dim.dim_param == "batch" and not first_dim.HasField("dim_value")


def test_onnx_runs_any_batch_size(onnx_export: export.ExportResult, batch: np.ndarray) -> None:
    session = make_session(onnx_export.path)
    assert session.run(None, {"images": batch[:1]})[0].shape == (1, 84, 8400)
    three = np.concatenate([batch, batch[:1]])
    assert session.run(None, {"images": three})[0].shape == (3, 84, 8400)


def test_operator_counts_and_parameters(
    onnx_export: export.ExportResult, loaded: yolo.LoadedYolo
) -> None:
    ops = op_counts(onnx_export.path)
    assert ops.index[0] == "ai.onnx:Conv"  # the most frequent operator
    assert ops["ai.onnx:Conv"] > 80 and ops["ai.onnx:Sigmoid"] > 50 and "ai.onnx:Resize" in ops
    graph = onnx.load(str(onnx_export.path)).graph
    assert ops.sum() == len(graph.node)
    assert "ai.onnx:BatchNormalization" not in ops  # folded into the convolutions
    pytorch = sum(p.numel() for p in loaded.model.model.parameters())
    weights = sum(int(np.prod(t.dims)) for t in graph.initializer)
    assert abs(weights - pytorch) / pytorch < 0.01


# --------------------------------------------------------------------------- parity


def test_pytorch_onnx_and_torchscript_agree(
    loaded: yolo.LoadedYolo,
    onnx_export: export.ExportResult,
    torchscript_export: export.ExportResult,
    batch: np.ndarray,
) -> None:
    assert torchscript_export.path == onnx_export.path.parents[2] / "yolo11n_torchscript/1/model.pt"
    outputs = {
        "ONNX Runtime": make_session(onnx_export.path).run(None, {"images": batch})[0],
        "TorchScript": export.run_torchscript(torchscript_export.path, batch),
    }
    pytorch = yolo.torch_forward(loaded, batch)
    assert np.abs(pytorch[0] - pytorch[1]).max() > 1.0  # not a constant
    for name, output in outputs.items():
        assert output.shape == pytorch.shape, name
        assert np.allclose(output, pytorch, export.PARITY_RTOL, export.PARITY_ATOL), name
        assert np.abs(output - pytorch).max() < 0.05, name


# --------------------------------------------------------------------------- never overwrite silently


def _new_file(folder: Path, content: bytes) -> Path:
    path = folder / f"new-{time.monotonic_ns()}.onnx"
    path.write_bytes(content)
    return path


def test_place_file_creates_then_replaces_its_own_file(tmp_path: Path) -> None:
    target = tmp_path / "m_onnx" / "1" / "model.onnx"
    where, action, message = export.place_file(_new_file(tmp_path, b"first"), target)
    assert (where, action) == (target, "created") and "created" in message
    where, action, message = export.place_file(_new_file(tmp_path, b"second"), target)
    assert (where, action) == (target, "replaced") and "our previous export" in message
    assert target.read_bytes() == b"second"
    assert json.loads(export.sidecar_path(target).read_text())["sha256"] == export.sha256_file(
        target
    )


def test_place_file_keeps_a_file_the_user_put_there(tmp_path: Path) -> None:
    target = tmp_path / "m_onnx" / "1" / "model.onnx"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"the user's own model")
    fallback = tmp_path / "fallback"
    where, action, message = export.place_file(
        _new_file(tmp_path, b"ours"), target, fallback_dir=fallback
    )
    assert action == "kept" and where == fallback / "model.onnx"
    assert target.read_bytes() == b"the user's own model"
    assert where.read_bytes() == b"ours"
    assert "overwrite=True" in message and str(where) in message
    assert not export.sidecar_path(target).exists()


def test_place_file_keeps_our_file_once_the_user_edited_it(tmp_path: Path) -> None:
    target = tmp_path / "m_onnx" / "1" / "model.onnx"
    export.place_file(_new_file(tmp_path, b"ours"), target)
    target.write_bytes(b"ours, edited by hand")
    _, action, _ = export.place_file(
        _new_file(tmp_path, b"ours again"), target, fallback_dir=tmp_path / "fb"
    )
    assert action == "kept" and target.read_bytes() == b"ours, edited by hand"


def test_place_file_overwrites_only_when_asked_and_says_so(tmp_path: Path) -> None:
    target = tmp_path / "m_onnx" / "1" / "model.onnx"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"the user's own model")
    old_sha = export.sha256_file(target)
    where, action, message = export.place_file(_new_file(tmp_path, b"ours"), target, overwrite=True)
    assert (where, action) == (target, "overwrote") and target.read_bytes() == b"ours"
    assert "NOT written by this helper" in message and old_sha[:12] in message


def test_export_keeps_a_user_file_in_the_repository(
    loaded: yolo.LoadedYolo, tmp_path: Path
) -> None:
    target = tmp_path / "yolo11n_torchscript" / "1" / "model.pt"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"hand-made TorchScript")
    result = export.export_torchscript(loaded, tmp_path, fallback_dir=tmp_path / "build")
    assert result.action == "kept" and result.path != result.target
    assert target.read_bytes() == b"hand-made TorchScript"
    assert result.path == tmp_path / "build" / "model.pt" and result.path.stat().st_size > 1e6
    assert "kept" in result.message


def test_model_names() -> None:
    assert export.triton_model_name() == "yolo11n_onnx"
    assert export.triton_model_name("s", "torchscript") == "yolo11s_torchscript"
    with pytest.raises(ValueError, match="format"):
        export.triton_model_name("n", "tflite")


# --------------------------------------------------------------------------- committed Triton configs


def _config(name: str) -> model_config_pb2.ModelConfig:
    text = (MODEL_REPOSITORY / name / "config.pbtxt").read_text()
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def test_onnx_config_matches_the_exported_model(onnx_export: export.ExportResult) -> None:
    config = _config("yolo11n_onnx")
    assert (config.name, config.platform, config.max_batch_size) == (
        "yolo11n_onnx",
        "onnxruntime_onnx",
        8,
    )
    graph = onnx.load(str(onnx_export.path)).graph
    assert [i.name for i in config.input] == [i.name for i in graph.input]
    assert [o.name for o in config.output] == [o.name for o in graph.output]
    assert list(config.input[0].dims) == [3, 640, 640]
    assert list(config.output[0].dims) == [84, 8400]
    assert config.input[0].data_type == model_config_pb2.TYPE_FP32
    # Triton's batcher guide starts from `dynamic_batching { }`: batching on, no queue delay.
    assert config.HasField("dynamic_batching")
    assert config.dynamic_batching.max_queue_delay_microseconds == 0
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU


def test_torchscript_config_uses_libtorch_naming() -> None:
    config = _config("yolo11n_torchscript")
    assert (config.name, config.platform) == ("yolo11n_torchscript", "pytorch_libtorch")
    assert [i.name for i in config.input] == ["INPUT__0"]
    assert [o.name for o in config.output] == ["OUTPUT__0"]
    assert list(config.input[0].dims) == [3, 640, 640]
    assert list(config.output[0].dims) == [84, 8400]


# --------------------------------------------------------------------------- netron


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


def test_netron_answers_on_loopback_and_stops(onnx_export: export.ExportResult) -> None:
    with NetronServer(onnx_export.path) as server:
        assert server.url.startswith("http://127.0.0.1:")
        assert server.answers() and server.running
        assert f'src="{server.url}"' in server.iframe()._repr_html_()
        pid = server.process.pid
    assert not server.running and not server.answers()
    assert not _alive(pid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_netron_dies_with_the_process_that_started_it(onnx_export: export.ExportResult) -> None:
    script = (
        "import os, sys\n"
        "from helpers.netron_view import NetronServer\n"
        "server = NetronServer(sys.argv[1])\n"
        "print(server.process.pid, flush=True)\n"
        "os._exit(0)  # no atexit, no finalizers: only the kernel can stop the child\n"
    )
    done = subprocess.run(  # noqa: S603 - argument list, no shell
        [sys.executable, "-c", script, str(onnx_export.path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    pid = int(done.stdout.split()[0])
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid)


def test_netron_refuses_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        NetronServer(tmp_path / "missing.onnx")
