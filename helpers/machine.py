"""Facts about this machine: GPUs and driver, CUDA, glibc, libpython, Docker (introduced in notebook 00).

One place asks the system; the environment report (``helpers.env``), the hardware cell of
every notebook (``nvidia_gpu_present``), the TensorRT build (``detect_gpu``), the saved
results (``gpu_names``), the server launchers (``python_shared_library``,
``stub_numpy_problem``, ``docker_engine_available``) and the GPU benchmark
(``machine_facts``) all read it here.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class GpuInfo:
    """One NVIDIA GPU as ``nvidia-smi`` or torch reports it (introduced in notebook 02)."""

    name: str
    compute_capability: str | None = None
    driver_version: str | None = None
    memory_mib: int | None = None


def gpus() -> list[GpuInfo]:
    """Every NVIDIA GPU ``nvidia-smi`` lists, else the one torch sees, else none (notebook 00).

    Its ``compute_cap`` field needs driver 510 or newer; with an older one, torch's view.
    """
    smi = shutil.which("nvidia-smi")
    if smi:
        query = "--query-gpu=name,compute_cap,driver_version,memory.total"
        command = [smi, query, "--format=csv,noheader,nounits"]
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            result = subprocess.run(command, capture_output=True, text=True, timeout=20)
            lines = [line for line in result.stdout.splitlines() if line.strip()]
            if lines and result.returncode == 0:
                return [_smi_gpu(line) for line in lines]
    capability = _torch_capability()
    if capability is not None:
        import torch

        return [GpuInfo(name=torch.cuda.get_device_name(0), compute_capability=capability)]
    return []


def _smi_gpu(line: str) -> GpuInfo:
    """A GpuInfo from one line of ``nvidia-smi --query-gpu=name,compute_cap,...``."""
    name, capability, driver, memory = (value.strip() for value in line.split(","))
    memory_mib = int(float(memory)) if memory.replace(".", "").isdigit() else None
    return GpuInfo(name, capability or _torch_capability(), driver, memory_mib)


def _torch_capability() -> str | None:
    """The first CUDA device's compute capability as torch reports it, or None."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(0)
    return f"{major}.{minor}"


def detect_gpu() -> GpuInfo | None:
    """The first NVIDIA GPU (nvidia-smi, then torch), or ``None`` when there is none (notebook 02)."""
    found = gpus()
    return found[0] if found else None


def nvidia_gpu_present() -> bool:
    """True when this machine has an NVIDIA GPU (the notebooks' hardware check, notebook 03)."""
    return detect_gpu() is not None


def gpu_names() -> str:
    """The NVIDIA GPUs' names joined with " + ", or ``"none"`` (notebook 05)."""
    return " + ".join(gpu.name for gpu in gpus()) or "none"


def glibc_version() -> tuple[int, int] | None:
    """This system's glibc version, e.g. ``(2, 36)``; ``None`` on non-glibc systems (notebook 05)."""
    try:
        text = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (AttributeError, ValueError, OSError):
        return None
    match = re.search(r"(\d+)\.(\d+)", text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def python_shared_library() -> Path | None:
    """Return the libpython3.X shared library the Python stub will load, or None if missing."""
    name = f"libpython{sys.version_info.major}.{sys.version_info.minor}.so.1.0"
    libdir = Path(sysconfig.get_config_var("LIBDIR") or "")
    if (libdir / name).exists():
        return libdir / name
    try:
        ctypes.CDLL(name)
    except OSError:
        return None
    for folder in ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib", "/lib/x86_64-linux-gnu"):
        if (Path(folder) / name).exists():
            return Path(folder) / name
    return Path(name)


def missing_libpython_hint() -> str:
    """Say how to install the libpython shared library the Python stub links against."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    return (
        f"libpython{version}.so.1.0 is not installed; Triton's Python stub needs it. "
        f"Install it with `sudo apt-get install -y libpython{version}` (Debian/Ubuntu), "
        "or use a conda Python (environment.yml), which ships it."
    )


@functools.lru_cache(maxsize=1)
def stub_numpy_version() -> str | None:
    """numpy's version as Triton's Python stub sees it, or None if it has none.

    The stub runs the ``python3`` beside this interpreter and ignores ``PYTHONPATH`` (seen in
    its ``sys.path``), so this asks this interpreter with ``-E`` (environment ignored) too.
    """
    result = subprocess.run(
        [sys.executable, "-E", "-c", "import numpy; print(numpy.__version__)"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    version = result.stdout.strip()
    return version if result.returncode == 0 and version else None


def stub_numpy_problem() -> str | None:
    """Why the embedded server's Python stub would garble every tensor here, or None."""
    version = stub_numpy_version()
    if version is None or int(version.split(".")[0]) < 2:
        return None
    return (
        f"numpy {version} is installed for {sys.executable}, and the Python stub of the "
        "embedded Triton (nvidia-pytriton 0.7.0, pybind11 2.11) is built for numpy 1.x: with "
        "numpy 2 every tensor it hands over has item size 0, so inputs read as their first "
        "value repeated and outputs come back empty (seen on a GPU machine with numpy 2.5). "
        f"Install numpy 1.x: `{sys.executable} -m pip install 'numpy<2'` (`make test` does)."
    )


def docker_engine_available() -> tuple[bool, str]:
    """Return whether a Docker engine answers, and why not when it does not."""
    if shutil.which("docker") is None:
        return False, "no docker command on PATH"
    try:
        result = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return False, f"`docker info` failed: {error}"
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["no engine"])[-1]
        return False, f"the docker client is installed but no engine answers ({reason})"
    return True, f"Docker engine {result.stdout.strip()}"


def cpu_name() -> str:
    """The CPU model and the number of cores Python sees, e.g. ``AMD EPYC 7B13, 2 cores`` (notebook 05)."""
    name = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    name = name or platform.processor() or platform.machine()
    return f"{name}, {os.cpu_count()} cores"


def machine_facts() -> dict[str, str]:
    """Device, driver, CUDA and library versions, for a benchmark report (tools/bench/gpu)."""
    import torch

    gpu = detect_gpu()
    return {
        "device": gpu.name if gpu else "none",
        "cpu": cpu_name(),
        "driver": (gpu.driver_version if gpu else None) or "none",
        "cuda": str(torch.version.cuda),  # the CUDA torch was built for
        "torch": torch.__version__,
        "python": platform.python_version(),
        "os": platform.platform(),
    }
