"""helpers.measure: tool choice, dispatch to perf_analyzer or the fallback, the comparison table."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from helpers import measure
from helpers import perf_analyzer as pa
from helpers.loadgen import Payload
from helpers.model_config import config_variant
from helpers.server import TritonServer
from helpers.statistics import ModelStats
from tests.tiny_models import sample_batch

PA_DATA = Path(__file__).parent / "data" / "perf_analyzer"


def _unavailable(**_kwargs) -> pa.PerfAnalyzerLocation:
    return pa.PerfAnalyzerLocation(False, (), "no binary here (test)", "none")


def test_choose_tool_fallback_when_perf_analyzer_cannot_run(monkeypatch):
    monkeypatch.setattr(pa, "find_perf_analyzer", _unavailable)
    choice = measure.choose_tool("auto")
    assert choice.name == "fallback generator"
    assert choice.reason == "perf_analyzer cannot run here: no binary here (test)"
    with pytest.raises(pa.PerfAnalyzerError, match="no binary here"):
        measure.choose_tool("perf_analyzer")


def test_choose_tool_prefers_a_runnable_perf_analyzer(monkeypatch):
    found = pa.PerfAnalyzerLocation(
        True, ("/opt/perf_analyzer",), "/opt/perf_analyzer runs", "path"
    )
    monkeypatch.setattr(pa, "find_perf_analyzer", lambda **_kwargs: found)
    choice = measure.choose_tool("auto")
    assert (choice.name, choice.location) == ("perf_analyzer", found)
    assert measure.choose_tool("fallback").name == "fallback generator"
    assert measure.choose_tool(choice) is choice
    with pytest.raises(ValueError, match="tool must be one of"):
        measure.choose_tool("locust")


def test_payload_for_uses_the_configs_input_name(tiny_repository: Path):
    images = sample_batch(2)
    onnx = measure.payload_for("tiny_onnx", images, tiny_repository)
    torchscript = measure.payload_for("tiny_torchscript", images, tiny_repository)
    assert list(onnx.arrays) == ["images"] and list(onnx.outputs) == ["scores"]
    assert list(torchscript.arrays) == ["INPUT__0"] and list(torchscript.outputs) == ["OUTPUT__0"]
    assert torchscript.batch_size == 2


def test_missing_reason(tiny_repository: Path, tmp_path: Path):
    assert measure.missing_reason("tiny_onnx", tiny_repository) == ""
    assert "config.pbtxt" in measure.missing_reason("yolo11n_trt", tmp_path)
    (tmp_path / "no_file" / "1").mkdir(parents=True)
    (tmp_path / "no_file" / "config.pbtxt").write_text('platform: "onnxruntime_onnx"\n')
    assert measure.missing_reason("no_file", tmp_path) == (
        f"{tmp_path / 'no_file' / '1' / 'model.onnx'} is missing: no notebook of the course creates it"
    )


def test_measure_configs_with_the_fallback_on_a_real_server(tiny_repository: Path):
    configs = {
        "batching off": config_variant(tiny_repository / "tiny_onnx", dynamic_batching=False),
        "batching 50 ms": config_variant(tiny_repository / "tiny_onnx"),
    }
    with TritonServer(tiny_repository, models=["tiny_onnx"]) as server:
        frame = measure.measure_configs(
            server,
            "tiny_onnx",
            configs,
            Payload({"images": sample_batch(1)}),
            [8],
            tool="fallback",
            warmup_s=0.3,
            window_s=1.0,
            max_windows=1,
            progress=False,
        )
    assert list(frame.columns[: len(pa.RESULT_COLUMNS)]) == list(pa.RESULT_COLUMNS)
    assert frame["config"].tolist() == list(configs)
    assert (frame["tool"] == "fallback generator").all()
    assert (frame["model"] == "tiny_onnx").all() and (frame["launcher"] == "embedded").all()
    off, on = frame["requests_per_execution"]
    assert off == 1.0  # no batcher: one request per execution
    assert on > 1.5  # 8 clients, max batch 8: the batcher runs several together
    assert frame["requests_per_execution"].tolist() == pytest.approx(
        (frame["server_success_delta"] / frame["server_executions_delta"]).tolist()
    )


def test_the_fallback_refuses_shared_memory_with_a_clear_error():
    """Shared memory is perf_analyzer's option here; tools/bench/shm.py measures the fallback."""
    with pytest.raises(ValueError, match="shared_memory is perf_analyzer's option"):
        measure.measure_sweep(
            _FakeServer(),
            "tiny_onnx",
            Payload({"images": sample_batch(1)}),
            [2],
            tool="fallback",
            shared_memory="system",
        )


class _FakeServer:
    grpc_url = "127.0.0.1:18001"
    http_url = "127.0.0.1:18000"
    mode = "docker"


def test_measure_sweep_dispatches_to_perf_analyzer(tmp_path: Path, monkeypatch):
    """A stand-in perf_analyzer logs its arguments and writes a committed real export."""
    args_log = tmp_path / "args.txt"
    script = tmp_path / "perf_analyzer"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> "{args_log}"\n'
        'out=""; level=""\n'
        'while [ $# -gt 0 ]; do case "$1" in\n'
        '  --concurrency-range=*) level="${1#--concurrency-range=}"; level="${level%%:*}";;\n'
        '  -f) shift; out="$1";;\n'
        "esac; shift; done\n"
        f'cp "{PA_DATA}/yolo_dyn_c$level.csv" "$out"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    counters = iter([(0, 0), (100, 25), (100, 25), (400, 50)])

    def statistics(client: Any, model: str) -> ModelStats:
        assert type(client).__module__.startswith("tritonclient.grpc") and model == "yolo"
        success, executions = next(counters)
        return ModelStats(success_count=success, execution_count=executions)

    monkeypatch.setattr(measure, "model_stats", statistics)
    location = pa.PerfAnalyzerLocation(True, (str(script),), "stand-in", "path")
    frame = measure.measure_sweep(
        _FakeServer(),
        "yolo",
        Payload({"images": np.zeros((1, 3, 640, 640), np.float32)}),
        [8, 32],
        tool=measure.ToolChoice("perf_analyzer", "stand-in", location),
        config="dyn",
        window_s=2.5,
        max_windows=4,
        progress=False,
        results_dir=tmp_path / "csv",
    )
    assert frame["tool"].tolist() == ["perf_analyzer", "perf_analyzer"]
    assert frame["concurrency"].tolist() == [8, 32]
    assert frame["throughput_infer_per_s"].tolist() == pytest.approx([173.235, 171.765])
    assert frame["requests_per_execution"].tolist() == pytest.approx([4.0, 12.0])
    assert frame["launcher"].tolist() == ["docker", "docker"]
    calls = args_log.read_text().splitlines()
    assert len(calls) == 2
    for call in calls:
        words = call.split()
        assert words[:6] == ["-m", "yolo", "-u", "127.0.0.1:18001", "-i", "grpc"]
        assert "--shape=images:3,640,640" in words
        assert words[words.index("--measurement-interval") + 1] == "2500"
        assert words[words.index("--max-trials") + 1] == "4"


def _rows() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "model": ["onnx", "torchscript"],
            "concurrency": [4, 4],
            "throughput_infer_per_s": [10.0, 5.0],
            "latency_avg_ms": [400.0, 800.0],
            "latency_p50_ms": [400.0, 800.0],
            "latency_p90_ms": [450.0, 900.0],
            "latency_p99_ms": [500.0, 1250.0],
            "server_queue_ms": [100.0, 300.0],
            "server_compute_infer_ms": [250.0, 450.0],
            "tool": ["fallback generator"] * 2,
        }
    )


def test_comparison_table_has_metric_rows_and_speedups():
    table = measure.comparison_table(_rows(), baseline="onnx")
    assert list(table.columns) == ["onnx", "torchscript"]
    assert table.index.name == "metric"
    assert table.loc["throughput (infer/s)", "torchscript"] == 5.0
    assert table.loc["throughput speed-up vs onnx (x)", "torchscript"] == 0.5
    assert table.loc["p50 latency speed-up vs onnx (x)", "torchscript"] == 0.5
    assert table.loc["p99 latency speed-up vs onnx (x)", "torchscript"] == 0.4
    assert table.loc["throughput speed-up vs onnx (x)", "onnx"] == 1.0
    assert table.loc["tool", "onnx"] == "fallback generator"
    with pytest.raises(ValueError, match="one row per model"):
        measure.comparison_table(pd.concat([_rows(), _rows()]))


def test_default_threads_share_the_cores(monkeypatch):
    monkeypatch.setattr(measure.os, "cpu_count", lambda: 8)
    assert [measure.default_threads(n) for n in (1, 2, 3, 16)] == [8, 4, 2, 1]
