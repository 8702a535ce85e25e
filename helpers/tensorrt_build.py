"""Build TensorRT engines from the course's ONNX model, by whichever route this machine has (notebook 02).

``choose_route`` tries, in order: ``trtexec`` (on ``PATH`` or in the usual install folders);
``docker``: trtexec in ``nvcr.io/nvidia/tensorrt:<tag>-py3``, whose default tag matches the
``tritonserver`` image the course serves with (same TensorRT version, so the plan loads there);
``python``: the ``tensorrt`` package's builder API (notebook 02's ``build_engine``).

Every route gets the same settings from an ``EngineSpec``. A JSON sidecar next to the plan
records the GPU, compute capability, TensorRT version and build flags: an engine only loads
on the GPU model and TensorRT version it was built with.

TensorRT 11 removed the precision flags (``--fp16``, ``BuilderFlag.FP16``): networks are
strongly typed, so an FP16 engine is built from an FP16 ONNX made first with ModelOpt AutoCast.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from helpers.commands import format_command
from helpers.machine import GpuInfo, detect_gpu, docker_engine_available
from helpers.paths import MODEL_REPOSITORY, REPO_ROOT

#: Folders where TensorRT installs put ``trtexec`` (Debian/Ubuntu packages, NGC images, tar files).
TRTEXEC_DIRS: tuple[str, ...] = (
    "/usr/src/tensorrt/bin",
    "/usr/local/tensorrt/bin",
    "/opt/tensorrt/bin",
    "/workspace/tensorrt/bin",
)
#: The NGC image with trtexec and the TensorRT Python package.
NGC_TENSORRT_IMAGE = "nvcr.io/nvidia/tensorrt"
#: Same release as ``nvcr.io/nvidia/tritonserver:24.10-py3`` (Triton 2.51, what nvidia-pytriton 0.7.0
#: bundles): NGC images of one release share one TensorRT version, so the plan loads in that server.
DEFAULT_NGC_TAG = "24.10"
#: TensorRT major version in the NGC images up to at least 25.x (precision flags still exist).
NGC_TENSORRT_MAJOR = 10
#: Where the repository is mounted inside the container.
CONTAINER_WORKDIR = "/workspace/lab"
#: The model notebook 01 exports, and where notebook 02 puts the engine for Triton.
ONNX_MODEL = MODEL_REPOSITORY / "yolo11n_onnx" / "1" / "model.onnx"
TRT_MODEL_NAME = "yolo11n_trt"
PRECISIONS: tuple[str, ...] = ("fp32", "fp16")
#: The network's input, as notebook 01 exported it: ``images`` ``[batch, 3, 640, 640]``.
INPUT_NAME = "images"
INPUT_SHAPE: tuple[int, ...] = (3, 640, 640)


class BuildError(RuntimeError):
    """A build command failed; the message holds the command and the tail of its output."""


# --------------------------------------------------------------------------- the machine


def find_trtexec() -> Path | None:
    """``trtexec`` on PATH, in ``$TENSORRT_HOME/bin``, or the usual folders (notebook 02)."""
    home = os.environ.get("TENSORRT_HOME")
    folders = [
        os.environ.get("PATH", os.defpath),
        *([f"{home}/bin"] if home else []),
        *TRTEXEC_DIRS,
    ]
    found = shutil.which("trtexec", path=os.pathsep.join(folders))
    return Path(found) if found else None


def tensorrt_version_from_tag(digits: str) -> str:
    """``'101600'`` -> ``'10.16.0'``, ``'8601'`` -> ``'8.6.1'`` (trtexec's ``[TensorRT vNNNN]``; notebook 02)."""
    if len(digits) >= 6:  # TensorRT 10+: MMmmpp, major may have one or two digits
        major, minor, patch = digits[:-4], digits[-4:-2], digits[-2:]
    elif len(digits) == 4:  # TensorRT 8.x: Mmpp
        major, minor, patch = digits[0], digits[1], digits[2:]
    else:
        raise ValueError(f"unexpected TensorRT version tag v{digits}")
    return f"{int(major)}.{int(minor)}.{int(patch)}"


def parse_build_info(text: str) -> dict[str, str | None]:
    """TensorRT version, GPU name and compute capability from a trtexec log (notebook 02)."""
    version = re.search(r"TensorRT version:\s*(\d+(?:\.\d+)*)", text)
    tag = re.search(r"\[TensorRT v(\d+)\]", text)
    device = re.search(r"Selected Device:\s*(.*\S)", text)
    capability = re.search(r"Compute Capability:\s*(\d+\.\d+)", text)
    tensorrt = version[1] if version else (tensorrt_version_from_tag(tag[1]) if tag else None)
    return {
        "tensorrt_version": tensorrt,
        "gpu_name": device[1] if device else None,
        "compute_capability": capability[1] if capability else None,
    }


def trtexec_version(trtexec: str | os.PathLike[str]) -> str | None:
    """TensorRT version of a ``trtexec`` binary, read from its ``[TensorRT vNNNNNN]`` banner (notebook 02)."""
    try:
        result = subprocess.run(
            [str(trtexec), "--help"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_build_info(result.stdout + result.stderr)["tensorrt_version"]


def tensorrt_python_version() -> str | None:
    """Version of the installed ``tensorrt`` Python package, without importing it (notebook 02)."""
    if importlib.util.find_spec("tensorrt") is None:
        return None
    for dist in ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


@dataclass(frozen=True)
class BuildEnvironment:
    """What this machine offers for building engines (introduced in notebook 02)."""

    gpu: GpuInfo | None
    trtexec: Path | None = None
    trtexec_version: str | None = None
    docker: bool = False
    tensorrt_python: str | None = None
    modelopt: bool = False

    def as_frame(self):  # -> pandas.DataFrame
        """One row per thing checked, with what was found (notebook 02)."""
        import pandas as pd

        gpu = self.gpu
        trtexec = f"{self.trtexec} (TensorRT {self.trtexec_version or '?'})"
        found = {
            "NVIDIA GPU": gpu.name if gpu else "none found (nvidia-smi, torch.cuda)",
            "compute capability": (gpu.compute_capability or "unknown") if gpu else "-",
            "trtexec": trtexec if self.trtexec else f"not on PATH nor in {', '.join(TRTEXEC_DIRS)}",
            "Docker engine": "answers" if self.docker else "none answers",
            "tensorrt Python package": self.tensorrt_python or "not installed",
            "ModelOpt (FP16 ONNX for TensorRT 11)": "installed"
            if self.modelopt
            else "not installed",
        }
        return pd.DataFrame({"found": found}).rename_axis("check")


def detect_build_environment() -> BuildEnvironment:
    """Look for a GPU, trtexec, a Docker engine, the tensorrt package and ModelOpt (notebook 02)."""
    trtexec = find_trtexec()
    return BuildEnvironment(
        gpu=detect_gpu(),
        trtexec=trtexec,
        trtexec_version=trtexec_version(trtexec) if trtexec else None,
        docker=docker_engine_available()[0],
        tensorrt_python=tensorrt_python_version(),
        modelopt=importlib.util.find_spec("modelopt") is not None,
    )


@dataclass(frozen=True)
class BuildRoute:
    """The route ``choose_route`` picked, or why there is none (introduced in notebook 02)."""

    name: str | None  # "trtexec", "docker", "python" or None
    reason: str
    tensorrt_version: str | None = None
    trtexec: Path | None = None

    @property
    def available(self) -> bool:
        """True when an engine can be built here."""
        return self.name is not None

    @property
    def tensorrt_major(self) -> int:
        """TensorRT major version of the route (10 when unknown: the NGC images' version)."""
        if self.tensorrt_version and self.tensorrt_version[0].isdigit():
            return int(self.tensorrt_version.split(".")[0])
        return NGC_TENSORRT_MAJOR


def choose_route(env: BuildEnvironment, ngc_tag: str = DEFAULT_NGC_TAG) -> BuildRoute:
    """Pick trtexec, then the NGC container, then the tensorrt package; explain when none fits (notebook 02)."""
    if env.gpu is None:
        found = []
        if env.trtexec:
            found.append(f"trtexec is at {env.trtexec}")
        if env.tensorrt_python:
            found.append(f"the tensorrt package {env.tensorrt_python} is installed")
        if env.docker:
            found.append("a Docker engine answers")
        extra = f" ({'; '.join(found)}, but none of them can build without a GPU)" if found else ""
        return BuildRoute(
            None,
            "No NVIDIA GPU here: TensorRT builds an engine by timing real CUDA kernels on the "
            "GPU it will run on, so it cannot build (or run) one on a CPU-only machine"
            + extra
            + ".",
        )
    if env.trtexec:
        return BuildRoute(
            "trtexec",
            f"trtexec found at {env.trtexec}",
            tensorrt_version=env.trtexec_version,
            trtexec=env.trtexec,
        )
    if env.docker:
        return BuildRoute(
            "docker",
            f"no local trtexec; a Docker engine answers, so trtexec runs in "
            f"{NGC_TENSORRT_IMAGE}:{ngc_tag}-py3",
        )
    if env.tensorrt_python:
        return BuildRoute(
            "python",
            f"no trtexec and no Docker engine; the tensorrt package {env.tensorrt_python} "
            "builds through its Python builder API",
            tensorrt_version=env.tensorrt_python,
        )
    return BuildRoute(
        None,
        f"A GPU is here ({env.gpu.name}) but no TensorRT: install TensorRT (trtexec), "
        "`pip install tensorrt`, or a Docker engine with the NVIDIA Container Toolkit.",
    )


# --------------------------------------------------------------------------- what to build


@dataclass(frozen=True)
class EngineSpec:
    """One YOLO11n engine build, whatever the route; its files go to ``folder`` (notebook 02)."""

    precision: str
    folder: Path
    onnx: Path = ONNX_MODEL
    min_batch: int = 1
    opt_batch: int = 4
    max_batch: int = 8

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError(
                "need 1 <= min_batch <= opt_batch <= max_batch, got "
                f"{self.min_batch}/{self.opt_batch}/{self.max_batch}"
            )

    @property
    def plan(self) -> Path:
        return Path(self.folder) / f"yolo11n_{self.precision}.plan"

    @property
    def timing_cache(self) -> Path:
        """One cache for every precision: the FP16 build reuses the FP32 build's timings."""
        return Path(self.folder) / "yolo11n.timing.cache"

    @property
    def layer_info(self) -> Path:
        return Path(self.folder) / f"yolo11n_{self.precision}.layers.json"

    @property
    def fp16_onnx(self) -> Path:
        """Where the FP16 ONNX for TensorRT 11+ goes (ModelOpt AutoCast output)."""
        return self.plan.with_name(self.plan.stem + "_autocast_fp16.onnx")

    def profile(self) -> dict[str, list[int]]:
        """The optimisation profile as lists, for the sidecar."""
        return {
            "min": [self.min_batch, *INPUT_SHAPE],
            "opt": [self.opt_batch, *INPUT_SHAPE],
            "max": [self.max_batch, *INPUT_SHAPE],
        }


def _shape(batch: int) -> str:
    """``images:4x3x640x640``: trtexec's shape syntax for one batch size."""
    return f"{INPUT_NAME}:" + "x".join(str(d) for d in (batch, *INPUT_SHAPE))


def trtexec_command(
    route: str,
    options: Mapping[str, object],
    trtexec: str | os.PathLike[str] = "trtexec",
    ngc_tag: str = DEFAULT_NGC_TAG,
    repo_root: Path = REPO_ROOT,
) -> list[str]:
    """trtexec with ``--name=value`` options (``None``: a bare ``--name``), here or in the NGC image (notebook 02).

    In the image, the repository is mounted at ``/workspace/lab`` and ``Path`` values are
    mapped there; the container runs as the calling user, so the files it writes are yours.
    """
    root = Path(repo_root).resolve()

    def argument(name: str, value: object) -> str:
        if value is None:
            return f"--{name}"
        if route == "docker" and isinstance(value, Path):
            host = value.resolve()
            if not host.is_relative_to(root):
                raise ValueError(
                    f"{value} is outside {root}, which is the only folder mounted in the container"
                )
            value = f"{CONTAINER_WORKDIR}/{host.relative_to(root).as_posix()}"
        return f"--{name}={value}"

    if route == "trtexec":
        prefix = [str(trtexec)]
    elif route == "docker":
        user = f"{os.getuid()}:{os.getgid()}" if hasattr(os, "getuid") else "1000:1000"
        prefix = [
            *("docker", "run", "--rm", "--gpus", "all", "--user", user),
            *("-v", f"{root}:{CONTAINER_WORKDIR}", "-w", CONTAINER_WORKDIR),
            f"{NGC_TENSORRT_IMAGE}:{ngc_tag}-py3",
            "trtexec",
        ]
    else:
        raise ValueError(f"trtexec runs on the 'trtexec' or 'docker' route, not {route!r}")
    return prefix + [argument(name, value) for name, value in options.items()]


def build_commands(
    route: str,
    spec: EngineSpec,
    tensorrt_major: int = NGC_TENSORRT_MAJOR,
    trtexec: str | os.PathLike[str] = "trtexec",
    ngc_tag: str = DEFAULT_NGC_TAG,
    repo_root: Path = REPO_ROOT,
) -> list[list[str]]:
    """The commands (argument lists, run in order) that build ``spec`` by ``route`` (notebook 02).

    An FP16 build on TensorRT 11+ starts with ModelOpt AutoCast (FP32 ONNX -> mixed FP16 ONNX,
    run on the host); trtexec then builds that ONNX, with no ``--fp16`` flag. The ``python``
    route has no build command: ``build_engines`` calls notebook 02's ``build_engine``.
    ``--skipInference`` builds only; ``benchmark_command`` times the saved plan.
    """
    if route not in ("trtexec", "docker", "python"):
        raise ValueError(f"unknown build route {route!r}: use 'trtexec', 'docker' or 'python'")
    fp16_graph = spec.precision == "fp16" and tensorrt_major >= 11
    commands: list[list[str]] = []
    if fp16_graph:
        autocast = ["-m", "modelopt.onnx.autocast", "--onnx_path", str(spec.onnx)]
        commands.append([sys.executable, *autocast, "--output_path", str(spec.fp16_onnx)])
    if route == "python":
        return commands
    options: dict[str, object] = {
        "onnx": spec.fp16_onnx if fp16_graph else Path(spec.onnx),
        "saveEngine": spec.plan,
        "minShapes": _shape(spec.min_batch),
        "optShapes": _shape(spec.opt_batch),
        "maxShapes": _shape(spec.max_batch),
    }
    if spec.precision == "fp16" and not fp16_graph:
        options["fp16"] = None
    options |= {
        "timingCacheFile": spec.timing_cache,
        "profilingVerbosity": "detailed",
        "exportLayerInfo": spec.layer_info,
        "skipInference": None,
    }
    return [*commands, trtexec_command(route, options, trtexec, ngc_tag, repo_root)]


def benchmark_command(
    route: str,
    plan: Path,
    batch: int,
    trtexec: str | os.PathLike[str] = "trtexec",
    ngc_tag: str = DEFAULT_NGC_TAG,
    repo_root: Path = REPO_ROOT,
    duration_s: int = 10,
) -> list[str]:
    """trtexec timing a saved plan at one batch size, locally or in the NGC image (notebook 02)."""
    options = {
        "loadEngine": Path(plan),
        "shapes": _shape(batch),
        "warmUp": 500,
        "duration": duration_s,
    }
    return trtexec_command(route, options, trtexec, ngc_tag, repo_root)


def inspect_command(
    route: str,
    plan: Path,
    trtexec: str | os.PathLike[str] = "trtexec",
    ngc_tag: str = DEFAULT_NGC_TAG,
) -> list[str]:
    """trtexec loading a saved plan and listing its layers, without running it (notebook 02)."""
    options = {
        "loadEngine": Path(plan),
        "skipInference": None,
        "dumpLayerInfo": None,
        "verbose": None,
    }
    return trtexec_command(route, options, trtexec, ngc_tag)


def run_commands(commands: Sequence[Sequence[str]], log: Path | None = None) -> str:
    """Run each command in turn; return the last one's output; raise ``BuildError`` with its tail (notebook 02).

    ``log`` (overwritten) receives every command and its output.
    """
    output = ""
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("")
    for command in commands:
        result = subprocess.run(  # noqa: S603 - an argument list we built, no shell
            [str(part) for part in command], capture_output=True, text=True
        )
        output = result.stdout + result.stderr
        if log is not None:
            with log.open("a") as handle:
                handle.write(f"$ {format_command(command)}\n{output}\n")
        if result.returncode != 0:
            tail = "\n".join(output.splitlines()[-25:])
            raise BuildError(
                f"{format_command(command)}\nexited with {result.returncode}; last lines:\n{tail}"
            )
    return output


# --------------------------------------------------------------------------- the sidecar


def sidecar_path(plan: Path) -> Path:
    """``model.plan`` -> ``model.plan.json`` (notebook 02)."""
    return plan.with_name(plan.name + ".json")


@dataclass
class EngineRecord:
    """What an engine is tied to, written next to the plan (introduced in notebook 02)."""

    gpu_name: str | None
    compute_capability: str | None
    tensorrt_version: str | None
    precision: str
    route: str
    build_flags: list[str]
    profile: dict[str, list[int]]
    input_name: str
    onnx_sha256: str | None = None
    plan_sha256: str | None = None
    driver_version: str | None = None
    built_at: str = field(
        default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds")
    )
    note: str = (
        "A TensorRT engine loads only on the GPU model (compute capability) and TensorRT "
        "version it was built with; rebuild it from the ONNX model anywhere else."
    )


def write_sidecar(
    spec: EngineSpec,
    route: str,
    commands: Sequence[Sequence[str]],
    gpu: GpuInfo | None,
    tensorrt_version: str | None,
    log_text: str = "",
) -> EngineRecord:
    """Write ``<plan>.json`` next to ``spec``'s plan; trtexec's own log wins over what the host saw (notebook 02)."""
    logged = parse_build_info(log_text)
    record = EngineRecord(
        gpu_name=logged["gpu_name"] or (gpu.name if gpu else None),
        compute_capability=logged["compute_capability"]
        or (gpu.compute_capability if gpu else None),
        tensorrt_version=logged["tensorrt_version"] or tensorrt_version,
        precision=spec.precision,
        route=route,
        build_flags=list(commands[-1]) if commands else [],
        profile=spec.profile(),
        input_name=INPUT_NAME,
        onnx_sha256=hashlib.sha256(Path(spec.onnx).read_bytes()).hexdigest(),
        plan_sha256=hashlib.sha256(spec.plan.read_bytes()).hexdigest(),
        driver_version=gpu.driver_version if gpu else None,
    )
    sidecar_path(spec.plan).write_text(json.dumps(asdict(record), indent=2) + "\n")
    return record


def read_sidecar(plan: Path) -> EngineRecord:
    """Read ``<plan>.json``; raise ``FileNotFoundError`` naming it when missing (notebook 02)."""
    path = sidecar_path(plan)
    if not path.exists():
        raise FileNotFoundError(f"no sidecar {path}: rebuild the engine in notebook 02")
    return EngineRecord(**json.loads(path.read_text()))


def sidecar_mismatches(
    record: EngineRecord, gpu: GpuInfo | None, tensorrt_version: str | None
) -> list[str]:
    """Why the recorded engine would not load here (empty when GPU and TensorRT match; notebook 02)."""
    problems = []
    capability = gpu.compute_capability if gpu else None
    if gpu is None:
        problems.append("no NVIDIA GPU here")
    elif record.compute_capability and capability not in (None, record.compute_capability):
        problems.append(
            f"built for compute capability {record.compute_capability} "
            f"({record.gpu_name}), this GPU is {capability} ({gpu.name})"
        )
    elif record.gpu_name and gpu.name != record.gpu_name:
        problems.append(
            f"built on {record.gpu_name}, this GPU is {gpu.name} (same compute capability: "
            "it may load, but the tactics were timed on the other GPU)"
        )
    if tensorrt_version is None:
        problems.append("no TensorRT here")
    elif record.tensorrt_version and tensorrt_version != record.tensorrt_version:
        problems.append(
            f"built with TensorRT {record.tensorrt_version}, this machine has {tensorrt_version}"
        )
    return problems


def install_plan(plan: Path, model_repository: Path = MODEL_REPOSITORY) -> Path:
    """Copy a plan and its sidecar to ``<repo>/yolo11n_trt/1/model.plan`` (notebook 02)."""
    from helpers.ort_optimize import install_model

    target = install_model(plan, TRT_MODEL_NAME, model_repository, filename="model.plan")
    if sidecar_path(plan).exists():
        shutil.copyfile(sidecar_path(plan), sidecar_path(target))
    return target


# --------------------------------------------------------------------------- build and time


@dataclass
class EngineBuild:
    """One engine built by ``build_engines``: its spec and sidecar record (notebook 02)."""

    spec: EngineSpec
    record: EngineRecord


def build_engines(
    route: BuildRoute,
    specs: Mapping[str, EngineSpec],
    env: BuildEnvironment,
    ngc_tag: str = DEFAULT_NGC_TAG,
) -> tuple[dict[str, EngineBuild], list[str]]:
    """Build every spec by ``route`` and write its sidecar; return the builds and what was skipped (notebook 02).

    An FP16 build on TensorRT 11+ without ModelOpt is skipped with the reason (its AutoCast
    step needs it). A failing build raises ``BuildError`` with the tail of trtexec's output;
    each build's log is ``build_<precision>.log`` beside its plan.
    """
    if not route.available:
        raise BuildError(f"no build route: {route.reason}")
    builds: dict[str, EngineBuild] = {}
    skipped: list[str] = []
    for precision, spec in specs.items():
        if spec.precision == "fp16" and route.tensorrt_major >= 11 and not env.modelopt:
            skipped.append(
                f"{precision}: TensorRT {route.tensorrt_version} builds FP16 only from an FP16 "
                "ONNX made by ModelOpt AutoCast (pip install 'nvidia-modelopt[onnx]')"
            )
            continue
        commands = build_commands(
            route.name,
            spec,
            route.tensorrt_major,
            trtexec=route.trtexec or "trtexec",
            ngc_tag=ngc_tag,
        )
        log = run_commands(commands, log=spec.plan.parent / f"build_{precision}.log")
        if route.name == "python":  # the tensorrt package's builder API, in this process
            from helpers.lessons.optimized_models import build_engine

            fp16 = spec.precision == "fp16"
            onnx = spec.fp16_onnx if fp16 and route.tensorrt_major >= 11 else spec.onnx
            build_engine(onnx, spec.plan, spec.profile(), fp16, spec.timing_cache, spec.layer_info)
        record = write_sidecar(spec, route.name, commands, env.gpu, route.tensorrt_version, log)
        builds[precision] = EngineBuild(spec, record)
    return builds, skipped


def time_engines(
    route: BuildRoute,
    builds: Mapping[str, EngineBuild],
    batch_sizes: Sequence[int],
    duration_s: int = 10,
    ngc_tag: str = DEFAULT_NGC_TAG,
):  # -> pandas.DataFrame
    """trtexec-time every built engine at every batch size; one row per run with images/s (notebook 02).

    Each run's log is ``bench_<precision>_b<batch>.log`` beside the plan (notebook 02 reads one).
    """
    import pandas as pd

    from helpers.lessons.optimized_models import parse_performance_summary

    rows = []
    for precision, build in builds.items():
        for batch in batch_sizes:
            command = benchmark_command(
                route.name,
                build.spec.plan,
                batch,
                trtexec=route.trtexec or "trtexec",
                ngc_tag=ngc_tag,
                duration_s=duration_s,
            )
            log_file = build.spec.plan.parent / f"bench_{precision}_b{batch}.log"
            summary = parse_performance_summary(run_commands([command], log=log_file))
            images = {"images_per_s": summary["throughput_qps"] * batch}
            rows.append({"precision": precision, "batch": batch, **images, **summary})
    return pd.DataFrame(rows)
