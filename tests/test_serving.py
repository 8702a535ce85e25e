"""Notebook 03's serving steps against a real embedded Triton, with the tiny models.

Dynamic batching seen in the statistics API, instances and warm-up, a second version sent
through the repository API, unloading, and the repository helpers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from tritonclient.utils import InferenceServerException

from helpers.batching import ModelStats, burst, bursts_frame, model_stats
from helpers.clients import infer, loaded_config, make_inputs
from helpers.model_config import config_to_dict, config_variant, read_config
from helpers.repository import config_table, repository_layout, wait_until_unloaded
from helpers.server import TritonServer
from tests.tiny_models import sample_batch

ATOL = 1e-5


@pytest.fixture(scope="module")
def server(tiny_repository: Path):
    with TritonServer(tiny_repository, models=["tiny_onnx", "tiny_onnx_nobatch"]) as running:
        yield running


# ----------------------------------------------------------------------------- statistics
def test_model_stats_subtract_and_summarise():
    before = ModelStats(
        inference_count=3,
        execution_count=3,
        success_count=3,
        queue_ns=30,
        compute_input_ns=3,
        compute_infer_ns=300,
        compute_output_ns=3,
        batches={1: 3},
    )
    after = ModelStats(
        inference_count=11,
        execution_count=6,
        success_count=11,
        fail_count=1,
        queue_ns=430,
        compute_input_ns=11,
        compute_infer_ns=1100,
        compute_output_ns=11,
        batches={1: 4, 4: 2},
    )
    delta = after - before
    assert (delta.inference_count, delta.execution_count, delta.success_count) == (8, 3, 8)
    assert delta.batches == {1: 1, 4: 2}
    assert delta.histogram().to_dict("list") == {
        "batch_size": [1, 4],
        "executions": [1, 2],
        "inferences": [1, 8],
    }
    assert delta.phase_ms()["queue"] == pytest.approx(400 / 8 / 1e6)
    summary = delta.summary()
    assert (summary["avg_batch"], summary["max_batch"], summary["requests"]) == (2.67, 4, 8)


def test_batching_off_runs_every_request_alone(server):
    requests = [{"images": sample_batch(1, seed=i)} for i in range(8)]
    result = burst(server, "tiny_onnx_nobatch", requests, concurrency=8, label="off")
    assert result.stats.batches == {1: 8}
    assert result.stats.execution_count == result.stats.inference_count == 8


def test_batching_on_groups_requests_and_keeps_them_apart(server, tiny_repository):
    batches = [sample_batch(1, seed=i) for i in range(8)]
    for protocol in ("grpc", "http"):
        result = burst(server, "tiny_onnx", [{"images": b} for b in batches], 8, protocol)
        assert result.stats.inference_count == result.stats.success_count == 8
        assert max(result.stats.batches) > 1
        assert result.stats.execution_count < 8
        assert sum(s * n for s, n in result.stats.batches.items()) == 8
        session = ort.InferenceSession(str(tiny_repository / "tiny_onnx/1/model.onnx"))
        expected = session.run(None, {"images": np.concatenate(batches)})[0]
        served = np.concatenate([o["scores"] for o in result.outputs])
        np.testing.assert_allclose(served, expected, atol=ATOL)  # no mix-ups inside a batch
    frame = bursts_frame([result])
    assert frame.loc["tiny_onnx", "requests"] == 8


def test_stats_read_the_same_over_both_protocols(server):
    burst(server, "tiny_onnx", [{"images": sample_batch(1)}], concurrency=1)  # waits until counted
    assert model_stats(server.http_client(), "tiny_onnx") == model_stats(
        server.grpc_client(), "tiny_onnx"
    )


# ----------------------------------------------------------------------------- repository API
def test_instances_and_warmup_then_back_to_the_file(server, tiny_repository):
    folder = tiny_repository / "tiny_onnx"
    variant = config_variant(folder, instances=2, parameters={"intra_op_thread_count": "1"})
    variant["model_warmup"] = [
        {
            "name": "zeros",
            "batch_size": 1,
            "inputs": {
                "images": {"data_type": "TYPE_FP32", "dims": [3, 16, 16], "zero_data": True}
            },
        }
    ]
    server.load_model("tiny_onnx", config=variant)
    running = config_to_dict(loaded_config(server.http_client(), "tiny_onnx"))
    assert running["instance_group"][0]["count"] == 2
    assert running["parameters"] == {"intra_op_thread_count": {"string_value": "1"}}
    assert model_stats(server.http_client(), "tiny_onnx").inference_count == 2  # one per instance
    server.load_model("tiny_onnx", config=config_variant(folder))
    back = config_to_dict(loaded_config(server.grpc_client(), "tiny_onnx"))
    assert back["instance_group"][0]["count"] == 1 and "parameters" not in back
    assert back["dynamic_batching"]["max_queue_delay_microseconds"] == "50000"


def test_a_second_version_through_the_repository_api(server, tiny_repository):
    folder = tiny_repository / "tiny_onnx"
    onnx = (folder / "1/model.onnx").read_bytes()
    two = config_variant(folder)
    two["version_policy"] = {"specific": {"versions": [1, 2]}}
    server.load_model(
        "tiny_onnx", config=two, files={"file:1/model.onnx": onnx, "file:2/model.onnx": onnx}
    )
    try:
        http = server.http_client()
        assert http.get_model_metadata("tiny_onnx")["versions"] == ["1", "2"]
        assert server.model_ready("tiny_onnx", "1") and server.model_ready("tiny_onnx", "2")
        batch = sample_batch(1)
        for asked, answered in (("1", "1"), ("2", "2"), ("", "2")):
            inputs = make_inputs("http", {"images": batch})
            result = http.infer("tiny_onnx", inputs, model_version=asked)
            assert result.get_response()["model_version"] == answered
        assert not (folder / "2").exists()  # the files travelled in the request
    finally:
        server.load_model("tiny_onnx", config=config_variant(folder))
    assert server.http_client().get_model_metadata("tiny_onnx")["versions"] == ["1"]
    assert not server.model_ready("tiny_onnx", "2")
    assert sorted(p.name for p in folder.iterdir()) == ["1", "config.pbtxt"]


def test_unload_frees_the_model_and_says_so(server):
    server.unload_model("tiny_onnx_nobatch")
    assert wait_until_unloaded(server, "tiny_onnx_nobatch") < 60
    states = {
        (e["name"], e.get("version")): (e.get("state"), e.get("reason"))
        for e in server.repository_index()
    }
    assert states[("tiny_onnx_nobatch", "1")] == ("UNAVAILABLE", "unloaded")
    with pytest.raises(InferenceServerException, match="no available versions"):
        infer(server, "tiny_onnx_nobatch", {"images": sample_batch(1)})
    outputs = infer(server, "tiny_onnx", {"images": sample_batch(1)}, protocol="http")
    assert outputs["scores"].shape == (1, 4)
    server.load_model("tiny_onnx_nobatch")


# ----------------------------------------------------------------------------- files and configs
def test_repository_layout_follows_the_naming_rules(tiny_repository):
    layout = repository_layout(tiny_repository).set_index("model")
    assert layout.loc["tiny_onnx", "file"] == "model.onnx"
    assert layout.loc["tiny_torchscript", "file"] == "model.pt"
    assert layout.loc["tiny_trt", "file"] == "model.plan"
    assert layout.loc["tiny_onnx", "problem"] == ""
    assert "Couldn't parse integer" in layout.loc["broken_config", "problem"]


def test_repository_layout_names_missing_files_and_bad_names(tmp_path):
    (tmp_path / "good/1").mkdir(parents=True)
    (tmp_path / "good/config.pbtxt").write_text('platform: "pytorch_libtorch"\n')
    (tmp_path / "renamed/1").mkdir(parents=True)
    (tmp_path / "renamed/1/model.py").write_text("")
    (tmp_path / "renamed/config.pbtxt").write_text('name: "other"\nbackend: "python"\n')
    (tmp_path / "custom/3").mkdir(parents=True)
    (tmp_path / "custom/3/net.onnx").write_bytes(b"x")
    (tmp_path / "custom/config.pbtxt").write_text(
        'backend: "onnxruntime"\ndefault_model_filename: "net.onnx"\n'
    )
    layout = repository_layout(tmp_path).set_index("model")
    assert "model.pt missing" in layout.loc["good", "problem"]
    assert "differs from the folder name" in layout.loc["renamed", "problem"]
    assert (layout.loc["custom", "version"], layout.loc["custom", "problem"]) == ("3", "")


def test_config_table_marks_what_triton_filled_in(server, tiny_repository):
    table = config_table(
        read_config(tiny_repository / "tiny_onnx"),
        loaded_config(server.http_client(), "tiny_onnx"),
    )
    assert not table.loc["max_batch_size", "filled in by Triton"]
    assert table.loc["backend", "filled in by Triton"]
    assert table.loc["backend", "config.pbtxt"] == ""
    assert table.loc["version_policy", "loaded by Triton"] == '{"latest": {"num_versions": 1}}'
