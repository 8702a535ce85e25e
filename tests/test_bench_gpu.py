"""The GPU benchmarks' pieces that run anywhere: configs, warm-up, reports, the bundle layout.

The measurements themselves need an NVIDIA GPU and perf_analyzer (docs/results holds the
runs); here the configs they load are loaded for real on the CPU, the committed report is
checked against the committed CSV, and the server bundle is checked to unpack into what
``helpers.server`` looks for.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from helpers.model_config import config_from_dict
from helpers.paths import REPO_ROOT
from helpers.server import EmbeddedTriton, TritonServer
from tests.conftest import require_system
from tools.bench import gpu, gpu_bundle, gpu_tools, headline

RESULTS = REPO_ROOT / "docs" / "results"


def test_batching_variant_warms_every_batch_size(tiny_repository: Path):
    values = gpu.variant(tiny_repository / "tiny_torchscript", batching=True, instances=2)
    config_from_dict(values)  # a valid ModelConfig
    assert values["instance_group"] == [{"kind": "KIND_GPU", "count": 2}]
    assert values["dynamic_batching"] == {"max_queue_delay_microseconds": 1000}
    sizes = [entry["batch_size"] for entry in values["model_warmup"]]
    assert sizes == list(range(1, values["max_batch_size"] + 1))
    first = values["model_warmup"][0]["inputs"]["INPUT__0"]
    assert first["zero_data"] is True and first["data_type"] == "TYPE_FP32"


def test_variant_sets_the_threads_of_each_instance(tiny_repository: Path):
    """NUM_THREADS given, not inherited: importing Ultralytics sets OMP_NUM_THREADS=1."""
    values = gpu.variant(tiny_repository / "tiny_torchscript", True, instances=4, threads=4)
    config_from_dict(values)
    assert values["parameters"]["NUM_THREADS"] == {"string_value": "4"}
    assert "NUM_THREADS" not in gpu.variant(tiny_repository / "tiny_torchscript", True).get(
        "parameters", {}
    )


def test_output_check_matches_each_served_answer_to_its_own_image(tiny_repository: Path):
    """The served-outputs check, on a CPU instance: every answer is its own image's, and the
    difference from the same file run in-process is float noise; a wrong shape shows as inf."""
    from tests.tiny_models import sample_batch

    module = torch.jit.load(str(tiny_repository / "tiny_torchscript" / "1" / "model.pt")).eval()
    images = [sample_batch(1, seed=seed) for seed in range(6)]
    with TritonServer(tiny_repository, models=["tiny_torchscript"]) as server:
        own, text = gpu.output_check(server.grpc_url, "tiny_torchscript", module, images)
        wrong = torch.jit.script(_Flatten())
        _, shape = gpu.output_check(server.grpc_url, "tiny_torchscript", wrong, images[:2])
        _, refused = gpu.output_check(  # float64 images: the server refuses them, the check goes on
            server.grpc_url,
            "tiny_torchscript",
            module.double(),
            [i.astype("float64") for i in images[:2]],
        )
    counted, gap = re.match(
        r"(\d+) of 6 answers nearest their own image; .* OUTPUT__0 (\S+)", text
    ).groups()
    assert own == 6 and counted == "6" and float(gap) < 1e-4
    assert "OUTPUT__0 inf (in-process values up to " in shape
    assert refused.startswith("0 of 2 answers") and "OUTPUT__0 inf" in refused


def test_boxes_are_compared_as_sets_of_rows():
    """Boxes of nearly equal scores may come out in another order: only the rows count."""
    boxes = np.random.default_rng(0).uniform(0, 640, (300, 6))
    assert gpu.row_set_gap(boxes, boxes[::-1]) == 0
    moved = boxes.copy()
    moved[7, 2] += 3.5  # one corner 3.5 px off
    assert gpu.row_set_gap(moved[::-1], boxes) == pytest.approx(3.5)
    missing = boxes.copy()
    missing[5] = 0  # one box lost: as far as that box is from the nearest other row
    assert gpu.row_set_gap(missing, boxes) > 10


class _Flatten(torch.nn.Module):
    """Answers in the wrong shape: [N, 768] instead of [N, 4]."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))  # the check reads the device from it

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1)


def test_variant_without_batching_warms_batch_one_only(tiny_repository: Path):
    values = gpu.variant(tiny_repository / "tiny_torchscript", batching=False)
    assert "dynamic_batching" not in values
    assert [entry["batch_size"] for entry in values["model_warmup"]] == [1]


def test_the_server_runs_the_warm_up_before_the_model_is_ready(tiny_repository: Path):
    """Loaded on the CPU (Triton refuses KIND_GPU without a GPU): one execution per size."""
    values = gpu.variant(tiny_repository / "tiny_torchscript", batching=True)
    values["instance_group"] = [{"kind": "KIND_CPU", "count": 1}]
    with TritonServer(tiny_repository) as server:
        server.load_model("tiny_torchscript", config=values)
        profile = gpu.batch_profile(server.grpc_url, "tiny_torchscript")
    counts = dict(re.findall(r" (\d+)x(\d+):", profile))
    assert counts == {str(size): "1" for size in range(1, values["max_batch_size"] + 1)}


def test_tool_comparison_report_is_what_its_csv_says(tmp_path: Path):
    csv = shutil.copy(RESULTS / "perftools-lent_h200-2026-11-29.csv", tmp_path)
    results = pd.read_csv(csv)
    table = gpu_tools.summary(results)
    assert len(table) == 6  # 2 transports x 3 concurrency levels
    for _, row in table.iterrows():
        runs = results[
            (results.shared_memory == row.shared_memory) & (results.concurrency == row.concurrency)
        ]
        pa = runs[runs.tool == "perf_analyzer"].throughput_infer_per_s.median()
        fb = runs[runs.tool == "fallback generator"].throughput_infer_per_s.median()
        assert row.tput_gap == pytest.approx(abs(fb - pa) / pa)
    committed = (RESULTS / "perftools-lent_h200-2026-11-29.md").read_text()
    assert gpu_tools.write_report(Path(csv)).read_text() == committed


def test_report_of_a_run_stopped_early_is_written_from_its_csv(tmp_path: Path):
    """``bench gpu --report``: the committed report of the run the time limit stopped."""
    name = "gpu-lent_h200-2026-11-29-default-plan"
    csv = shutil.copy(RESULTS / f"{name}.csv", tmp_path)
    figures = gpu.run(["--report", str(csv)])
    assert figures["boxes_ips"] == pytest.approx(H200_RUNS[f"{name}.csv"], abs=0.1)
    assert (tmp_path / f"{name}.md").read_text() == (RESULTS / f"{name}.md").read_text()


def test_report_shows_the_command_at_the_headline_points_concurrency(tmp_path: Path):
    """Boxes out measured at 64 with the raw-output level (``--top``) at 32: the command says 64."""
    csv = Path(shutil.copy(RESULTS / "gpu-lent_h200-2026-11-29-boxes-again.csv", tmp_path))
    gpu.run(["--report", str(csv), "--top", "32"])
    report = csv.with_suffix(".md").read_text()
    assert "--concurrency-range=64:64" in report and "32:32" not in report


def test_report_of_several_transports_gives_each_command_and_cuda_shm_last(tmp_path: Path):
    """A run over gRPC, system and CUDA shared memory: one command per transport, each at its
    own best level, and the last line ends with the CUDA shared-memory ceiling ratio."""
    system = pd.read_csv(RESULTS / "gpu-lent_h200-2026-11-29-boxes-again.csv")
    grpc = system.assign(
        config=system.config + ", gRPC",
        shared_memory="none",
        throughput_infer_per_s=system.throughput_infer_per_s / 2,
    )
    cuda = system.assign(
        config=system.config + ", CUDA shm",
        shared_memory="cuda",
        concurrency=32,
        throughput_infer_per_s=[3000.0, 3100.0, 3200.0],
    )
    csv = tmp_path / "gpu-transports.csv"
    pd.concat([grpc, system, cuda]).to_csv(csv, index=False)
    figures = gpu.run(["--report", str(csv)])
    report = csv.with_suffix(".md").read_text()
    commands = re.findall(r"- command, (.+?): `(.+?)`", report)
    assert [name for name, _ in commands] == [
        "tensors in gRPC messages",
        "system shared memory",
        "CUDA shared memory",
    ]
    assert "--shared-memory" not in commands[0][1] and "--concurrency-range=64:64" in commands[0][1]
    assert (
        "--shared-memory=cuda" in commands[2][1] and "--concurrency-range=32:32" in commands[2][1]
    )
    assert figures["boxes_ips"] == pytest.approx(2065.2, abs=0.1)  # system shm, as before
    assert figures["boxes_ips_cuda_shm"] == 3100.0
    ceiling = float(system.ceiling_ips.iloc[0])
    assert figures["ceiling_ratio_grpc"] == pytest.approx(2065.21 / 2 / ceiling, abs=1e-4)
    assert headline("gpu", figures).endswith(f"ceiling_ratio_cuda_shm={3100 / ceiling:.3g}")
    assert "| boxes, batching on, 4 instance(s), CUDA shm | 32 | 3 | 3000.0 | 3100.0 |" in report
    assert "still come back through host memory" in report and "OUTPUTS_ON_GPU" not in report


def test_report_says_where_the_outputs_went_and_the_cuda_pool_it_was_given(tmp_path: Path):
    """``--boxes-outputs gpu`` and ``--cuda-pool-mb``, as recorded in the CSV, in the report."""
    system = pd.read_csv(RESULTS / "gpu-lent_h200-2026-11-29-boxes-again.csv")
    cuda = system.assign(
        config=system.config + ", CUDA shm", shared_memory="cuda", outputs="gpu", cuda_pool_mb=1024
    )
    csv = tmp_path / "gpu-cuda.csv"
    cuda.to_csv(csv, index=False)
    gpu.run(["--report", str(csv)])
    report = csv.with_suffix(".md").read_text()
    assert "In CUDA shared memory, boxes out's outputs (7.2 kB per image) stay on the GPU" in report
    assert "CUDA memory pool on GPU 0: 1024 MiB" in report
    both = pd.concat([system.assign(outputs="gpu", cuda_pool_mb=64), cuda.assign(cuda_pool_mb=64)])
    both.to_csv(csv, index=False)
    gpu.run(["--report", str(csv)])
    report = csv.with_suffix(".md").read_text()
    assert "stacks the batch on the GPU; its outputs (7.2 kB per image) stay on the GPU" in report
    assert "memory pool" not in report


def test_requests_of_several_images_are_counted_as_perf_analyzer_counts_them(tmp_path: Path):
    """``--request-batch 8``: perf_analyzer's infer/s already counts every image of a request
    (its ``client_infer_per_sec`` is requests x batch size / duration), so images/s and the
    ceiling ratio are infer/s as recorded, not x 8; the configuration, the command (``-b 8``,
    output shared memory for 8 images) and the report say requests of 8 images."""
    system = pd.read_csv(RESULTS / "gpu-lent_h200-2026-11-29-boxes-again.csv")
    config = gpu.label("boxes", True, 4, "cuda", request_batch=8)
    assert config == "boxes, batching on, 4 instance(s), requests of 8 images, CUDA shm"
    cuda = system.assign(
        config=config,
        shared_memory="cuda",
        concurrency=8,
        throughput_infer_per_s=[3000.0, 3100.0, 3200.0],
        request_batch=8,
    )
    csv = tmp_path / "gpu-request-batch.csv"
    pd.concat([system.assign(request_batch=1), cuda]).to_csv(csv, index=False)
    figures = gpu.run(["--report", str(csv)])
    ceiling = float(system.ceiling_ips.iloc[0])
    assert figures["boxes_ips_cuda_shm"] == 3100.0
    assert figures["ceiling_ratio_cuda_shm"] == pytest.approx(3100.0 / ceiling)
    assert figures["boxes_ips"] == pytest.approx(2065.2, abs=0.1)  # 1 image per request
    report = csv.with_suffix(".md").read_text()
    commands = dict(re.findall(r"- command, (.+?): `(.+?)`", report))
    cuda_command = commands["CUDA shared memory"].split()
    assert "-b" in cuda_command and cuda_command[cuda_command.index("-b") + 1] == "8"
    assert f"--output-shared-memory-size={gpu.output_bytes('boxes') * 8}" in cuda_command
    assert " -b " not in commands["system shared memory"]
    assert f"| {config} | 8 | 3 | 3000.0 | 3100.0 | 3200.0 |" in report
    assert "sent in requests of 8 images" in report
    # a CSV of a run before the option (no request_batch column): one image per request
    system.to_csv(csv, index=False)
    gpu.run(["--report", str(csv)])
    assert "requests of" not in csv.with_suffix(".md").read_text()


@pytest.mark.parametrize("images", ["0", str(gpu.MAX_BATCH + 1)])
def test_the_command_line_refuses_requests_the_model_cannot_take(images: str, capsys):
    with pytest.raises(SystemExit) as error:
        gpu.run(["--request-batch", images, "--report", "unused.csv"])
    assert error.value.code == 2
    message = capsys.readouterr().err
    assert f"--request-batch must be 1 to {gpu.MAX_BATCH}" in message and f"got {images}" in message


def _fake_embedded(root: Path, python: str) -> EmbeddedTriton:
    package = root / "pytriton"
    for path in (
        package / "tritonserver" / "bin" / "tritonserver",
        package / "tritonserver" / "backends" / "python" / "libtriton_python.so",
        package / "tritonserver" / "python_backend_stubs" / python / "triton_python_backend_stub",
        package / "tritonserver" / "python_backend_stubs" / "3.8" / "triton_python_backend_stub",
        root / "nvidia_pytriton.libs" / "libcurl-1.so.4",
        root / "nvidia_pytriton.libs" / "libpython3-2.13.so.1.0",
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(path.name)
    return EmbeddedTriton(
        binary=package / "tritonserver" / "bin" / "tritonserver",
        library_dir=root / "nvidia_pytriton.libs",
        python_backend_dir=package / "tritonserver" / "backends" / "python",
        stub=package
        / "tritonserver"
        / "python_backend_stubs"
        / python
        / "triton_python_backend_stub",
        cache_directory=package / "tritonserver" / "caches",
    )


def test_bundle_unpacks_into_what_the_server_manager_finds(tmp_path: Path, monkeypatch):
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    fake = _fake_embedded(tmp_path / "wheel", python)
    monkeypatch.setattr(gpu_bundle, "find_embedded_triton", lambda: fake)
    archive = gpu_bundle.pack_server(tmp_path / "tritonserver.tar.xz", python=python)
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        tar.extractall(tmp_path / "site", filter="data")
    assert "nvidia_pytriton.libs/libcurl-1.so.4" in names
    assert not any("libpython" in name or "/3.8" in name for name in names)
    found = subprocess.run(
        [sys.executable, "-c", "from helpers.server import find_embedded_triton as f; print(f())"],
        env={**os.environ, "PYTHONPATH": f"{tmp_path / 'site'}{os.pathsep}{REPO_ROOT}"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(tmp_path / "site" / "pytriton" / "tritonserver" / "bin" / "tritonserver") in found


def test_bundle_refuses_a_python_the_wheel_has_no_stub_for(tmp_path: Path, monkeypatch):
    fake = _fake_embedded(tmp_path / "wheel", "3.12")
    monkeypatch.setattr(gpu_bundle, "find_embedded_triton", lambda: fake)
    with pytest.raises(FileNotFoundError, match="no Python 3.99 stub"):
        gpu_bundle.pack_server(tmp_path / "x.tar.xz", python="3.99")


def test_bundle_packs_numpy_1_for_the_stub_without_its_tests(tmp_path: Path, monkeypatch):
    def download(folder: Path, names: list[str], python: str) -> list[Path]:
        assert names == [gpu_bundle.STUB_NUMPY] and names[0].startswith("numpy==1.")
        folder.mkdir(parents=True)
        wheel = folder / "numpy-1.26.4-cp312-cp312-manylinux_2_17_x86_64.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            for name in ["numpy/__init__.py", "numpy/tests/test_x.py", "numpy/core/tests/t.py"]:
                archive.writestr(name, "")
            archive.writestr("numpy/core/_umath_tests.so", "")  # a module, not a test folder
            archive.writestr("numpy.libs/libopenblas.so", "")
        return [wheel]

    monkeypatch.setattr(gpu_bundle, "download_wheels", download)
    with tarfile.open(gpu_bundle.pack_numpy(tmp_path / "numpy.tar.xz")) as tar:
        files = sorted(member.name for member in tar.getmembers() if member.isfile())
    assert files == [
        "numpy.libs/libopenblas.so",
        "numpy/__init__.py",
        "numpy/core/_umath_tests.so",
    ]
    assert "numpy.tar.xz" in gpu_bundle.SETUP and "/tmp/venv" in gpu_bundle.SETUP


def _wheel(folder: Path, name: str, files: dict[str, str]) -> Path:
    """A minimal pure-Python wheel ``name`` 1.0 holding ``files``."""
    folder.mkdir(parents=True, exist_ok=True)
    path, dist = folder / f"{name}-1.0-py3-none-any.whl", f"{name}-1.0.dist-info"
    with zipfile.ZipFile(path, "w") as archive:
        for file_name, text in files.items():
            archive.writestr(file_name, text)
        archive.writestr(f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        archive.writestr(
            f"{dist}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        archive.writestr(f"{dist}/RECORD", "")
    return path


def test_course_bundle_installs_the_wheels_into_one_archive_without_jedis_stubs(tmp_path: Path):
    wheels = [
        _wheel(
            tmp_path / "w", "jedi", {"jedi/__init__.py": "", "jedi/third_party/typeshed/a.pyi": ""}
        ),
        _wheel(tmp_path / "w", "nbclient", {"nbclient/__init__.py": "VERSION = 1\n"}),
    ]
    with tarfile.open(gpu_bundle.pack_site(tmp_path / "site.tar.xz", wheels)) as tar:
        names = set(tar.getnames())
    assert {"jedi/__init__.py", "nbclient/__init__.py", "nbclient-1.0.dist-info"} <= names
    assert not any("typeshed" in name for name in names)
    assert "site.tar.xz" in gpu_bundle.SETUP


def test_course_bundle_leaves_out_what_the_image_has(monkeypatch):
    def pip(command, check):  # pip's --report of a resolution, as pip writes it
        report = Path(command[command.index("--report") + 1])
        found = [
            ("nbclient", "0.11.0"),
            ("numpy", "2.5.5"),
            ("Jinja2", "3.1.6"),
            ("ml_dtypes", "0.7"),
        ]
        install = [{"metadata": {"name": name, "version": version}} for name, version in found]
        report.write_text(json.dumps({"install": install}))

    monkeypatch.setattr(gpu_bundle.subprocess, "run", pip)
    assert gpu_bundle.resolve(["nbclient==0.11.0"]) == ["nbclient==0.11.0"]


#: The H200 runs with a report, and the headline ``boxes_ips`` each report gives (nan: a run
#: without boxes out). ``default-plan`` stopped at the device's time limit; its report was
#: written afterwards by ``--report``.
H200_RUNS = {
    "gpu-lent_h200-2026-11-29.csv": 2003.0,
    "gpu-lent_h200-2026-11-29-default-plan.csv": 2026.45,
    "gpu-lent_h200-2026-11-29-raw-exports.csv": float("nan"),
    "gpu-lent_h200-2026-11-29-boxes-again.csv": 2065.2,
}


@pytest.mark.parametrize("name", H200_RUNS)
def test_committed_h200_report_is_what_its_csv_says(name: str):
    """The table and the last line of each H200 report, recomputed from its CSV."""
    csv = RESULTS / name
    results = pd.read_csv(csv)
    assert (results.tool == "perf_analyzer").all() and (results.device == "NVIDIA H200").all()
    table = gpu.summary(results)
    assert (table.runs == 3).all()
    boxes = results[results.model == "boxes"].ceiling_ips
    figures = gpu.headline_figures(table, 32, float(boxes.iloc[0]) if len(boxes) else float("nan"))
    report = csv.with_suffix(".md").read_text()
    assert gpu.markdown_table(table.round(2)) in report
    assert headline("gpu", figures) in report
    assert f"`{csv.stem}.console.txt`" in report
    assert figures["boxes_ips"] == pytest.approx(H200_RUNS[name], abs=0.1, nan_ok=True)


@pytest.mark.parametrize("name", H200_RUNS)
def test_committed_h200_console_output_is_the_first_run_of_each_point(name: str):
    """Each console block of an H200 run says what the CSV's first run of that point says."""
    import re

    csv = RESULTS / name
    results = pd.read_csv(csv)
    blocks = csv.with_suffix(".console.txt").read_text().split("### ")[1:]
    assert len(blocks) == len(results.groupby(["config", "concurrency"]))
    for block in blocks:
        header, text = block.split("\n", 1)
        config, level = header.rsplit(", concurrency ", 1)
        row = results[
            (results.config == config) & (results.concurrency == int(level)) & (results.repeat == 0)
        ].iloc[0]
        throughput = float(re.search(r"Throughput: ([\d.]+) infer/sec", text).group(1))
        p99_us = float(re.search(r"p99 latency: (\d+) usec", text).group(1))
        assert throughput == pytest.approx(row.throughput_infer_per_s, rel=1e-4)
        assert p99_us / 1000 == pytest.approx(row.latency_p99_ms, abs=0.001)


#: The H100 runs of 2026-12-06 (boxes out, 4 instances, concurrency 64, one call): every
#: transport, then CUDA shared memory twice more; ``ceiling_ratio_cuda_shm`` of each report.
H100_RUNS = {
    "gpu-lent_h100-2026-12-06-transports.csv": 0.584,
    "gpu-lent_h100-2026-12-06-cuda-shm-2.csv": 0.582,
    "gpu-lent_h100-2026-12-06-cuda-shm-3.csv": 0.571,
}

#: The H100 runs of 2026-12-07 10:10-10:45 UTC (four calls): several images per request
#: (``--request-batch``), 8 images at concurrency 16 four times, then its neighbours once each;
#: then the headline point with other instance counts.
H100_RUNS_12_07 = {
    "gpu-lent_h100-2026-12-07-request-batch-8-c16-1.csv": 0.811,
    "gpu-lent_h100-2026-12-07-request-batch-8-c16-2.csv": 0.809,
    "gpu-lent_h100-2026-12-07-request-batch-8-c16-3.csv": 0.811,
    "gpu-lent_h100-2026-12-07-request-batch-8-c16-4.csv": 0.811,
    "gpu-lent_h100-2026-12-07-request-batch-8-c8.csv": 0.747,
    "gpu-lent_h100-2026-12-07-request-batch-4-c16.csv": 0.703,
    "gpu-lent_h100-2026-12-07-request-batch-8-c8-2-instances.csv": 0.765,
    "gpu-lent_h100-2026-12-07-request-batch-8-c32.csv": 0.827,
    "gpu-lent_h100-2026-12-07-request-batch-16-c16.csv": 0.854,
    "gpu-lent_h100-2026-12-07-request-batch-8-c16-gpu-outputs.csv": 0.744,
    # one image per request as at the headline point, other instance counts
    "gpu-lent_h100-2026-12-07-cuda-shm-1-instance.csv": 0.603,
    "gpu-lent_h100-2026-12-07-cuda-shm-2-instances-1.csv": 0.649,
    "gpu-lent_h100-2026-12-07-cuda-shm-2-instances-2.csv": 0.664,
    "gpu-lent_h100-2026-12-07-cuda-shm-8-instances.csv": 0.505,
    "gpu-lent_h100-2026-12-07-cuda-shm-2-instances-c32.csv": 0.546,
}
H100_REPORTS = {**H100_RUNS, **H100_RUNS_12_07}


@pytest.mark.parametrize("name", H100_REPORTS)
def test_committed_h100_transport_report_is_what_its_csv_says(name: str):
    """Table and last line of each H100 report recomputed from its CSV; answers checked."""
    csv = RESULTS / name
    results = pd.read_csv(csv)
    assert (results.device == "NVIDIA H100 80GB HBM3").all()
    table = gpu.summary(results)
    figures = gpu.headline_figures(table, 32, float(results.ceiling_ips.iloc[0]))
    report = csv.with_suffix(".md").read_text()
    assert gpu.markdown_table(table.round(2)) in report
    assert headline("gpu", figures) in report
    assert f"`{csv.stem}.console.txt`" in report
    assert figures["ceiling_ratio_cuda_shm"] == pytest.approx(H100_REPORTS[name], abs=5e-4)
    assert "CUDA shm: 8 of 8 answers nearest their own image" in report


# ------------------------------------------------------------------------ payload in parts
def _parts_call(tmp_path: Path, carried: list[Path], sent: Path) -> subprocess.CompletedProcess:
    """One device call as ``parts.sh`` sees it: the parts it carried, beside ``parts.txt``."""
    call = tmp_path / "call"
    shutil.rmtree(call, ignore_errors=True)
    (call / "parts").mkdir(parents=True)
    for part in carried:
        shutil.copy(part, call / "parts" / part.name)
    shutil.copy(sent / "parts.txt", call / "parts.txt")
    script = gpu_bundle.PARTS.replace("/tmp/gpu-parts", str(tmp_path / "store"))
    (call / "parts.sh").write_text(script.replace("/tmp/extra", str(tmp_path / "extra")))
    return subprocess.run(  # noqa: S603 - an argument list
        ["sh", str(call / "parts.sh")], capture_output=True, text=True, check=False
    )


def test_an_archive_split_over_calls_is_unpacked_once_its_last_part_arrives(tmp_path: Path):
    """split_archive here, parts.sh on the device: parts kept between calls, checksum checked."""
    for program, package in (("xz", "xz-utils"), ("sha256sum", "coreutils")):
        require_system(program, package)
    payload = tmp_path / "payload"
    payload.mkdir()
    content = os.urandom(300_000)  # random bytes: xz cannot shrink them below three parts
    (payload / "model.bin").write_bytes(content)
    sent = tmp_path / "sent"
    archive = sent / "extra.tar.xz"
    sent.mkdir()
    with tarfile.open(archive, "w:xz") as tar:
        tar.add(payload / "model.bin", arcname="model/model.bin")
    parts = gpu_bundle.split_archive(archive, sent / "parts", most=120_000)
    assert [p.name for p in parts] == ["extra.tar.xz.00", "extra.tar.xz.01", "extra.tar.xz.02"]
    assert not archive.exists()

    first = _parts_call(tmp_path, parts[:2], sent)
    assert first.returncode == 1 and "extra.tar.xz: 2 of 3 parts here" in first.stdout
    second = _parts_call(tmp_path, parts[2:], sent)
    assert second.returncode == 0, second.stdout + second.stderr
    assert (tmp_path / "extra" / "model" / "model.bin").read_bytes() == content
    third = _parts_call(tmp_path, [], sent)
    assert third.returncode == 0 and "extra.tar.xz: unpacked" in third.stdout


def test_parts_that_do_not_add_up_are_refused(tmp_path: Path):
    require_system("sha256sum", "coreutils")
    sent = tmp_path / "sent"
    sent.mkdir()
    archive = sent / "extra.tar.xz"
    archive.write_bytes(b"not the bytes the checksum was taken of")
    (part,) = gpu_bundle.split_archive(archive, sent / "parts")
    part.write_bytes(b"changed on the way")
    done = _parts_call(tmp_path, [part], sent)
    assert done.returncode == 2 and "checksum mismatch" in done.stdout
    assert not (tmp_path / "extra" / ".extra.tar.xz.done").exists()


# ------------------------------------------------------------------- outputs left on the GPU
@pytest.fixture
def pytorch_stand_in(monkeypatch):
    """The PyTorch stand-in's ``model`` module as the stub imports it, on a fake ``pb_utils``.

    The fake records what a response is built from: DLPack capsules (outputs left on the GPU)
    or numpy arrays (outputs copied to the host).
    """
    import importlib.util
    import types

    from helpers.server import STAND_INS

    fake = types.ModuleType("triton_python_backend_utils")
    fake.triton_string_to_numpy = lambda name: np.dtype(name[5:].lower().replace("fp", "float"))
    fake.Tensor = type(
        "Tensor",
        (),
        {
            "__init__": lambda self, name, array: setattr(self, "sent", (name, "numpy", array)),
            "from_dlpack": staticmethod(
                lambda name, capsule: types.SimpleNamespace(
                    sent=(name, "dlpack", torch.utils.dlpack.from_dlpack(capsule))
                )
            ),
        },
    )
    fake.InferenceResponse = lambda output_tensors: output_tensors
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake)
    monkeypatch.syspath_prepend(str(STAND_INS))
    monkeypatch.syspath_prepend(str(STAND_INS / "pytorch"))
    spec = importlib.util.spec_from_file_location(
        "pytorch_stand_in", STAND_INS / "pytorch/model.py"
    )
    model = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(model)
    yield model
    for name in ("runtime_base", "host_buffers", "torch_runner"):
        sys.modules.pop(name, None)


def test_outputs_left_on_the_device_go_out_through_dlpack_without_a_copy(pytorch_stand_in):
    instance = pytorch_stand_in.TritonPythonModel()
    instance.output_dtypes = {"OUTPUT__0": np.float32, "OUTPUT__1": np.int32}
    boxes = torch.arange(2 * 3 * 6, dtype=torch.float32).reshape(2, 3, 6)  # plays GPU memory
    count = np.array([[3], [1]], dtype=np.int32)  # a host output beside it
    sent = [t.sent for t in instance._response({"OUTPUT__0": boxes[1:], "OUTPUT__1": count[1:]})]
    assert [(name, how) for name, how, _ in sent] == [
        ("OUTPUT__0", "dlpack"),
        ("OUTPUT__1", "numpy"),
    ]
    assert sent[0][2].data_ptr() == boxes[1:].data_ptr()  # the batch's own memory, no copy
    np.testing.assert_array_equal(sent[1][2], [[1]])


def test_outputs_of_host_inputs_come_back_in_host_memory_even_with_outputs_on_gpu(
    pytorch_stand_in,
):
    """``OUTPUTS_ON_GPU`` acts only on a batch whose inputs all came in GPU memory."""
    instance = pytorch_stand_in.TritonPythonModel()
    instance.model_name, instance.max_batch_size = "tiny", 4
    instance.input_names, instance.output_names = ["INPUT__0"], ["OUTPUT__0"]
    instance.output_dtypes = {"OUTPUT__0": np.float32}
    instance.optimized_execution, instance.graphed = False, None
    instance.device = torch.device("cpu")
    instance.outputs_on_gpu = True  # as load() sets it on a GPU instance
    instance.module = torch.nn.Flatten()
    outputs = instance.run({"INPUT__0": np.ones((2, 3), dtype=np.float32)})
    assert isinstance(outputs["OUTPUT__0"], np.ndarray)
    sent = [t.sent for t in instance._response(outputs)]
    assert sent[0][1] == "numpy"
