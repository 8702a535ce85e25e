"""helpers.tensorrt_build and notebook 02's readers of trtexec's output, without a GPU.

The build routes are checked through the commands they produce; the parsers on trtexec's own
output format (fixtures in tests/data/trtexec, see its README for where the format comes from).
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from helpers import tensorrt_build as tb
from helpers.lessons import optimized_models as tr

DATA = Path(__file__).parent / "data" / "trtexec"
REPO = Path("/repo")


def spec(precision: str = "fp16", root: Path = REPO) -> tb.EngineSpec:
    return tb.EngineSpec(
        precision,
        folder=root / "build" / "tensorrt",
        onnx=root / "model_repository" / "yolo11n_onnx" / "1" / "model.onnx",
        min_batch=1,
        opt_batch=4,
        max_batch=8,
    )


# --------------------------------------------------------------------------- trtexec route


def test_trtexec_build_command_fp16_on_tensorrt_10():
    [command] = tb.build_commands(
        "trtexec", spec("fp16"), tensorrt_major=10, trtexec="/usr/src/tensorrt/bin/trtexec"
    )
    assert command == [
        "/usr/src/tensorrt/bin/trtexec",
        "--onnx=/repo/model_repository/yolo11n_onnx/1/model.onnx",
        "--saveEngine=/repo/build/tensorrt/yolo11n_fp16.plan",
        "--minShapes=images:1x3x640x640",
        "--optShapes=images:4x3x640x640",
        "--maxShapes=images:8x3x640x640",
        "--fp16",
        "--timingCacheFile=/repo/build/tensorrt/yolo11n.timing.cache",
        "--profilingVerbosity=detailed",
        "--exportLayerInfo=/repo/build/tensorrt/yolo11n_fp16.layers.json",
        "--skipInference",
    ]


def test_trtexec_build_command_fp32_has_no_precision_flag():
    [command] = tb.build_commands("trtexec", spec("fp32"))
    assert "--fp16" not in command
    assert "--saveEngine=/repo/build/tensorrt/yolo11n_fp32.plan" in command
    # both precisions share one timing cache
    assert "--timingCacheFile=/repo/build/tensorrt/yolo11n.timing.cache" in command


def test_tensorrt_11_fp16_goes_through_modelopt_autocast():
    autocast, build = tb.build_commands("trtexec", spec("fp16"), tensorrt_major=11)
    fp16_onnx = "/repo/build/tensorrt/yolo11n_fp16_autocast_fp16.onnx"
    assert autocast == [
        sys.executable,
        "-m",
        "modelopt.onnx.autocast",
        "--onnx_path",
        "/repo/model_repository/yolo11n_onnx/1/model.onnx",
        "--output_path",
        fp16_onnx,
    ]
    assert f"--onnx={fp16_onnx}" in build
    assert "--fp16" not in build  # removed in TensorRT 11: strongly typed networks only
    # FP32 needs no extra step on TensorRT 11
    assert len(tb.build_commands("trtexec", spec("fp32"), tensorrt_major=11)) == 1


def test_benchmark_command_times_one_batch_size():
    command = tb.benchmark_command(
        "trtexec", REPO / "build/tensorrt/yolo11n_fp16.plan", 4, duration_s=5
    )
    assert command == [
        "trtexec",
        "--loadEngine=/repo/build/tensorrt/yolo11n_fp16.plan",
        "--shapes=images:4x3x640x640",
        "--warmUp=500",
        "--duration=5",
    ]
    with pytest.raises(ValueError, match="not 'python'"):
        tb.benchmark_command("python", REPO / "x.plan", 1)


# --------------------------------------------------------------------------- docker route


def test_docker_build_command_mounts_the_repo_and_maps_paths(tmp_path):
    root = tmp_path / "lab"
    (root / "build").mkdir(parents=True)
    [command] = tb.build_commands("docker", spec("fp16", root), repo_root=root, ngc_tag="24.10")
    image = command.index("nvcr.io/nvidia/tensorrt:24.10-py3")
    assert command[:3] == ["docker", "run", "--rm"]
    assert command[command.index("--gpus") + 1] == "all"
    assert command[command.index("-v") + 1] == f"{root.resolve()}:/workspace/lab"
    assert command[command.index("-w") + 1] == "/workspace/lab"
    assert command[command.index("--user") + 1] == f"{os.getuid()}:{os.getgid()}"
    assert command[image + 1] == "trtexec"
    args = command[image + 2 :]
    assert "--onnx=/workspace/lab/model_repository/yolo11n_onnx/1/model.onnx" in args
    assert "--saveEngine=/workspace/lab/build/tensorrt/yolo11n_fp16.plan" in args
    assert "--exportLayerInfo=/workspace/lab/build/tensorrt/yolo11n_fp16.layers.json" in args
    assert "--fp16" in args  # the 24.10 image has TensorRT 10
    assert not any(str(root) in a for a in args), "host paths must not leak into the container"


def test_docker_refuses_paths_outside_the_mounted_repo(tmp_path):
    outside = tb.EngineSpec("fp32", tmp_path, onnx=Path("/elsewhere/model.onnx"))
    with pytest.raises(ValueError, match="outside"):
        tb.build_commands("docker", outside, repo_root=tmp_path)


def test_docker_benchmark_command(tmp_path):
    command = tb.benchmark_command("docker", tmp_path / "build" / "e.plan", 8, repo_root=tmp_path)
    assert "nvcr.io/nvidia/tensorrt:24.10-py3" in command
    assert "--loadEngine=/workspace/lab/build/e.plan" in command
    assert "--shapes=images:8x3x640x640" in command


# --------------------------------------------------------------------------- python route


def test_python_route_runs_no_command_but_autocast():
    # build_engines calls notebook 02's build_engine in-process; only AutoCast is a command
    assert tb.build_commands("python", spec("fp16")) == []
    [autocast] = tb.build_commands("python", spec("fp16"), tensorrt_major=11)
    assert autocast[:3] == [sys.executable, "-m", "modelopt.onnx.autocast"]


def test_unknown_route_is_an_error():
    with pytest.raises(ValueError, match="unknown build route"):
        tb.build_commands("onnxruntime", spec())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"precision": "int8"},
        {"min_batch": 0},
        {"opt_batch": 9, "max_batch": 8},
        {"min_batch": 4, "opt_batch": 2},
    ],
)
def test_engine_spec_validates(kwargs):
    with pytest.raises(ValueError):
        tb.EngineSpec(**{"precision": "fp32", "folder": REPO, **kwargs})


# --------------------------------------------------------------------------- choosing a route

GPU = tb.GpuInfo(name="NVIDIA L4", compute_capability="8.9", driver_version="550.54")


def test_no_gpu_means_no_route_and_says_why():
    env = tb.BuildEnvironment(gpu=None, trtexec=Path("/usr/src/tensorrt/bin/trtexec"), docker=True)
    route = tb.choose_route(env)
    assert not route.available and route.name is None
    assert "No NVIDIA GPU" in route.reason
    assert "trtexec is at /usr/src/tensorrt/bin/trtexec" in route.reason


def test_route_order_trtexec_then_docker_then_python():
    everything = tb.BuildEnvironment(
        gpu=GPU,
        trtexec=Path("/opt/tensorrt/bin/trtexec"),
        trtexec_version="10.16.0",
        docker=True,
        tensorrt_python="10.16.0",
    )
    route = tb.choose_route(everything)
    assert route.name == "trtexec" and route.tensorrt_major == 10
    no_trtexec = tb.BuildEnvironment(gpu=GPU, docker=True, tensorrt_python="11.4.0")
    assert tb.choose_route(no_trtexec).name == "docker"
    assert "nvcr.io/nvidia/tensorrt:24.10-py3" in tb.choose_route(no_trtexec).reason
    python_only = tb.BuildEnvironment(gpu=GPU, tensorrt_python="11.4.0.106")
    route = tb.choose_route(python_only)
    assert route.name == "python" and route.tensorrt_major == 11
    nothing = tb.BuildEnvironment(gpu=GPU)
    route = tb.choose_route(nothing)
    assert not route.available and "no TensorRT" in route.reason


def test_detect_build_environment_on_this_machine_answers_something():
    env = tb.detect_build_environment()
    frame = env.as_frame()
    assert {"NVIDIA GPU", "trtexec", "Docker engine", "tensorrt Python package"} <= set(frame.index)
    route = tb.choose_route(env)
    assert route.available == (route.name is not None)
    assert route.reason


def _executable(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_find_trtexec_in_tensorrt_home(tmp_path, monkeypatch):
    (tmp_path / "bin").mkdir()
    trtexec = _executable(
        tmp_path / "bin" / "trtexec",
        'echo "&&&& RUNNING TensorRT.trtexec [TensorRT v101600] # trtexec --help"',
    )
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setenv("TENSORRT_HOME", str(tmp_path))
    assert tb.find_trtexec() == trtexec
    assert tb.trtexec_version(trtexec) == "10.16.0"


def test_run_commands_raises_with_the_tail(tmp_path):
    log = tmp_path / "build.log"
    ok = [sys.executable, "-c", "print('TensorRT version: 10.5.0')"]
    bad = [sys.executable, "-c", "import sys; print('parse error: bad node'); sys.exit(3)"]
    assert "10.5.0" in tb.run_commands([ok], log=log)
    with pytest.raises(tb.BuildError, match="exited with 3") as error:
        tb.run_commands([ok, bad], log=log)
    assert "parse error: bad node" in str(error.value)
    assert log.read_text().count("$ ") == 2  # each call starts the log afresh


# --------------------------------------------------------------------------- the sidecar


def test_sidecar_records_what_the_engine_is_tied_to(tmp_path):
    root = tmp_path
    engine = spec("fp16", root)
    engine.onnx.parent.mkdir(parents=True)
    engine.onnx.write_bytes(b"onnx bytes")
    engine.plan.parent.mkdir(parents=True)
    engine.plan.write_bytes(b"plan bytes")
    commands = tb.build_commands("trtexec", engine)
    log = (DATA / "yolo11n_fp16_b4_benchmark.log").read_text()
    host_gpu = tb.GpuInfo("NVIDIA L4", "8.9", "550.54.15")
    record = tb.write_sidecar(engine, "trtexec", commands, host_gpu, None, log_text=log)
    data = json.loads((root / "build" / "tensorrt" / "yolo11n_fp16.plan.json").read_text())
    assert data["gpu_name"] == "NVIDIA L4"
    assert data["compute_capability"] == "8.9"
    assert data["tensorrt_version"] == "10.5.0"  # from trtexec's own log
    assert data["driver_version"] == "550.54.15"
    assert data["precision"] == "fp16" and data["route"] == "trtexec"
    assert "--fp16" in data["build_flags"]
    assert data["profile"] == {
        "min": [1, 3, 640, 640],
        "opt": [4, 3, 640, 640],
        "max": [8, 3, 640, 640],
    }
    assert len(data["plan_sha256"]) == 64 and len(data["onnx_sha256"]) == 64
    assert tb.read_sidecar(engine.plan) == record

    (root / "model_repository" / "yolo11n_trt").mkdir(parents=True)
    (root / "model_repository" / "yolo11n_trt" / "config.pbtxt").write_text("")
    installed = tb.install_plan(engine.plan, model_repository=root / "model_repository")
    assert installed == root / "model_repository" / "yolo11n_trt" / "1" / "model.plan"
    assert installed.read_bytes() == b"plan bytes"
    assert tb.read_sidecar(installed).plan_sha256 == record.plan_sha256


def test_sidecar_mismatches_explain_why_an_engine_will_not_load():
    record = tb.EngineRecord(
        gpu_name="NVIDIA L4",
        compute_capability="8.9",
        tensorrt_version="10.5.0",
        precision="fp16",
        route="docker",
        build_flags=[],
        profile={},
        input_name="images",
    )
    assert tb.sidecar_mismatches(record, tb.GpuInfo("NVIDIA L4", "8.9"), "10.5.0") == []
    problems = tb.sidecar_mismatches(record, tb.GpuInfo("NVIDIA H100", "9.0"), "10.16.0")
    assert any("compute capability 8.9" in p for p in problems)
    assert any("TensorRT 10.5.0" in p and "10.16.0" in p for p in problems)
    assert tb.sidecar_mismatches(record, None, None) == ["no NVIDIA GPU here", "no TensorRT here"]


def test_read_sidecar_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.plan.json"):
        tb.read_sidecar(tmp_path / "model.plan")


# --------------------------------------------------------------------------- trtexec's output


def test_performance_summary_tensorrt_10():
    summary = tr.parse_performance_summary((DATA / "yolo11n_fp16_b4_benchmark.log").read_text())
    stats = ["min", "max", "mean", "median", "p90", "p95", "p99"]  # as trtexec prints them
    metrics = ["latency", "enqueue_time", "h2d_latency", "gpu_compute_time", "d2h_latency"]
    assert list(summary) == ["throughput_qps"] + [f"{m}_{s}_ms" for m in metrics for s in stats]
    assert summary["throughput_qps"] == pytest.approx(189.62)
    assert summary["latency_min_ms"] == pytest.approx(5.19531)
    assert summary["latency_mean_ms"] == pytest.approx(5.2477)
    assert summary["latency_median_ms"] == pytest.approx(5.24219)
    assert summary["latency_p99_ms"] == pytest.approx(5.41992)
    assert summary["gpu_compute_time_mean_ms"] == pytest.approx(2.6418)
    assert summary["h2d_latency_mean_ms"] == pytest.approx(1.6512)
    assert summary["d2h_latency_p95_ms"] == pytest.approx(0.961914)
    # host latency = H2D + GPU compute + D2H, as trtexec defines it
    assert summary["latency_mean_ms"] == pytest.approx(
        summary["h2d_latency_mean_ms"]
        + summary["gpu_compute_time_mean_ms"]
        + summary["d2h_latency_mean_ms"],
        rel=1e-3,
    )


def test_performance_summary_tensorrt_8_has_only_p99():
    summary = tr.parse_performance_summary((DATA / "trt8_summary.log").read_text())
    assert summary["throughput_qps"] == pytest.approx(402.118)
    assert [k for k in summary if k.startswith("latency_")] == [
        "latency_min_ms",
        "latency_max_ms",
        "latency_mean_ms",
        "latency_median_ms",
        "latency_p99_ms",
    ]
    assert summary["gpu_compute_time_p99_ms"] == pytest.approx(2.03711)


def test_units_other_than_ms_are_converted():
    text = (
        "[I] === Performance summary ===\n"
        "[I] Throughput: 1e+04 qps\n"
        "[I] Latency: min = 90 us, max = 0.002 s, mean = 0.1 ms, median = 100 us, percentile(99.9%) = 0.5 ms\n"
        "[I] Total Host Walltime: 3000 ms\n"  # not a statistic line: ignored
    )
    summary = tr.parse_performance_summary(text)
    assert summary["throughput_qps"] == 10_000
    assert summary["latency_min_ms"] == pytest.approx(0.09)
    assert summary["latency_max_ms"] == pytest.approx(2.0)
    assert summary["latency_p99.9_ms"] == pytest.approx(0.5)


def test_build_only_log_has_no_summary():
    with pytest.raises(ValueError, match="skipInference"):
        tr.parse_performance_summary(
            "&&&& RUNNING TensorRT.trtexec [TensorRT v100500] # trtexec --skipInference\n"
        )
    with pytest.raises(ValueError, match="Throughput"):
        tr.parse_performance_summary("[I] === Performance summary ===\n[I] Latency: min = 1 ms\n")


def test_build_info_and_bindings_from_the_log():
    log = (DATA / "yolo11n_fp16_b4_benchmark.log").read_text()
    assert tb.parse_build_info(log) == {
        "tensorrt_version": "10.5.0",
        "gpu_name": "NVIDIA L4",
        "compute_capability": "8.9",
    }
    bindings = tr.parse_io_bindings(log)
    assert bindings.to_dict("records") == [
        {"name": "images", "mode": "input", "shape": (4, 3, 640, 640), "dtype": "fp32"},
        {"name": "output0", "mode": "output", "shape": (4, 84, 8400), "dtype": "fp32"},
    ]
    assert (
        tr.parse_io_bindings("[I] Created input binding for x with dimensions 1x3").iloc[0]["dtype"]
        is None
    )


@pytest.mark.parametrize(
    ("tag", "version"),
    [("101600", "10.16.0"), ("100500", "10.5.0"), ("8601", "8.6.1"), ("110400", "11.4.0")],
)
def test_tensorrt_version_tags(tag, version):
    assert tb.tensorrt_version_from_tag(tag) == version


@pytest.mark.parametrize(
    ("text", "precision"),
    [
        ("Float", "fp32"),
        ("Half", "fp16"),
        ("Row major linear FP32", "fp32"),
        ("Channel major FP16 format where channel % 8 == 0", "fp16"),
        ("Int8", "int8"),
        ("BFloat16", "bf16"),
        ("Int32", "int32"),
        ("UInt8", "uint8"),
        (None, "unknown"),
    ],
)
def test_precision_names(text, precision):
    assert tr.precision_of(text) == precision


def test_layer_info_detailed_json():
    layers = tr.parse_layer_info(DATA / "yolo11n_fp16_layers.json")
    assert len(layers) == 6
    first = layers.iloc[0]
    assert first["layer_type"] == "CaskConvolution"
    assert first["precision"] == "fp16"
    assert first["onnx_layers"] == 3  # Conv + Sigmoid + Mul fused into one kernel
    assert first["output_shape"] == (4, 16, 320, 320)
    assert layers["precision"].value_counts().to_dict() == {"fp16": 5, "fp32": 1}


def test_layer_info_names_only():
    layers = tr.parse_layer_info((DATA / "trt11_io_tensors.json").read_text())
    assert layers["precision"].tolist() == ["unknown", "unknown"]


# --------------------------------------------------------------------------- build and time


FAKE_TRTEXEC = f"""
# Stand-in for trtexec: writes what a build writes, prints the fixture log for a benchmark.
echo "&&&& RUNNING TensorRT.trtexec [TensorRT v100500] # trtexec $*"
for a in "$@"; do
  case "$a" in
    --saveEngine=*) echo "engine bytes" > "${{a#--saveEngine=}}";;
    --exportLayerInfo=*) cp {DATA}/yolo11n_fp16_layers.json "${{a#--exportLayerInfo=}}";;
    --loadEngine=*) cat {DATA}/yolo11n_fp16_b4_benchmark.log; exit 0;;
    --onnx=*broken*) echo "[E] [TRT] ModelImporter.cpp: failed to parse onnx file" >&2; exit 1;;
  esac
done
echo "[I] Selected Device: NVIDIA L4"
echo "[I] Compute Capability: 8.9"
echo "[I] TensorRT version: 10.5.0"
"""


def test_build_and_time_engines_with_a_stand_in_trtexec(tmp_path):
    trtexec = _executable(tmp_path / "trtexec", FAKE_TRTEXEC)
    env = tb.BuildEnvironment(gpu=GPU, trtexec=trtexec, trtexec_version="10.5.0")
    route = tb.choose_route(env)
    folder = tmp_path / "build"
    folder.mkdir()
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"onnx")
    specs = {p: tb.EngineSpec(p, folder, onnx) for p in ("fp32", "fp16")}
    builds, skipped = tb.build_engines(route, specs, env)
    assert skipped == [] and list(builds) == ["fp32", "fp16"]
    for precision, build in builds.items():
        assert build.spec.plan.read_text() == "engine bytes\n"
        record = tb.read_sidecar(build.spec.plan)
        assert record == build.record
        assert (record.gpu_name, record.compute_capability, record.tensorrt_version) == (
            "NVIDIA L4",
            "8.9",
            "10.5.0",
        )
        assert ("--fp16" in record.build_flags) == (precision == "fp16")
        assert (tr.parse_layer_info(build.spec.layer_info)["precision"] == "fp16").sum() == 5
        assert (folder / f"build_{precision}.log").read_text().startswith("$ ")

    table = tb.time_engines(route, builds, [1, 4], duration_s=3)
    assert table[["precision", "batch"]].values.tolist() == [
        ["fp32", 1],
        ["fp32", 4],
        ["fp16", 1],
        ["fp16", 4],
    ]
    assert table["throughput_qps"].tolist() == pytest.approx([189.62] * 4)
    assert table["images_per_s"].tolist() == pytest.approx([189.62, 758.48, 189.62, 758.48])
    assert "--duration=3" in (folder / "bench_fp16_b4.log").read_text()


def test_build_engines_reports_failures_and_skips(tmp_path):
    trtexec = _executable(tmp_path / "trtexec", FAKE_TRTEXEC)
    env = tb.BuildEnvironment(gpu=GPU, trtexec=trtexec, trtexec_version="11.4.0")
    route = tb.choose_route(env)
    broken = {"fp32": tb.EngineSpec("fp32", tmp_path, tmp_path / "broken.onnx")}
    with pytest.raises(tb.BuildError, match="failed to parse onnx file"):
        tb.build_engines(route, broken, env)
    fp16_only = {"fp16": tb.EngineSpec("fp16", tmp_path, tmp_path / "m.onnx")}
    builds, skipped = tb.build_engines(route, fp16_only, env)  # TensorRT 11, no ModelOpt
    assert builds == {} and "ModelOpt AutoCast" in skipped[0]
    with pytest.raises(tb.BuildError, match="No NVIDIA GPU"):
        tb.build_engines(tb.choose_route(tb.BuildEnvironment(gpu=None)), fp16_only, env)
