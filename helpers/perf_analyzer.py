"""Run Triton's ``perf_analyzer`` and read its CSV into the course's result schema (notebook 05).

``find_perf_analyzer`` looks on ``PATH``, for the ``perf-analyzer`` wheel's binary, then for the
NGC ``tritonserver:<tag>-py3-sdk`` image; the wheel needs glibc >= 2.38, and on older systems
pip resolves a 0.1.0 placeholder without the binary. ``run`` calls perf_analyzer once per
concurrency level and returns ``RESULT_COLUMNS``, the schema the course's fallback load
generator returns too.

perf_analyzer writes latencies in microseconds; the schema is in milliseconds. Its CSV may have
no average latency column: ``latency_avg_ms`` is then the sum of the component columns (client
send, network + server send/recv, server queue, compute input, compute infer, compute output,
client recv), i.e. the average request latency as perf_analyzer breaks it down.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from helpers.machine import docker_engine_available, glibc_version
from helpers.paths import build_dir

#: The components whose sum is the average latency (perf_analyzer's breakdown).
LATENCY_COMPONENTS: tuple[str, ...] = (
    "client_send_ms",
    "network_server_send_recv_ms",
    "server_queue_ms",
    "server_compute_input_ms",
    "server_compute_infer_ms",
    "server_compute_output_ms",
    "client_recv_ms",
)
#: The DataFrame schema every load generator of the course returns, in this order.
RESULT_COLUMNS: tuple[str, ...] = (
    "concurrency",
    "throughput_infer_per_s",
    "latency_avg_ms",
    "latency_p50_ms",
    "latency_p90_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    *LATENCY_COMPONENTS,
    "tool",
)
#: perf_analyzer CSV column -> schema column (latencies are converted from us to ms).
CSV_COLUMNS: dict[str, str] = {
    "Concurrency": "concurrency",
    "Inferences/Second": "throughput_infer_per_s",
    "Client Send": "client_send_ms",
    "Network+Server Send/Recv": "network_server_send_recv_ms",
    "Server Queue": "server_queue_ms",
    "Server Compute Input": "server_compute_input_ms",
    "Server Compute Infer": "server_compute_infer_ms",
    "Server Compute Output": "server_compute_output_ms",
    "Client Recv": "client_recv_ms",
    "p50 latency": "latency_p50_ms",
    "p90 latency": "latency_p90_ms",
    "p95 latency": "latency_p95_ms",
    "p99 latency": "latency_p99_ms",
    "Avg latency": "latency_avg_ms",
}
#: glibc the perf-analyzer wheels (2.5x-2.60) are built for.
WHEEL_MIN_GLIBC: tuple[int, int] = (2, 38)
#: NGC SDK image with perf_analyzer, same release as the server the course uses (Triton 2.51).
SDK_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3-sdk"
PROTOCOLS = ("http", "grpc")
SHARED_MEMORY = ("none", "system", "cuda")
#: What perf_analyzer prints when its windows' latencies and throughputs vary too much.
UNSTABLE = "Failed to obtain stable measurement"
#: The ``tool`` of a level that stayed unstable in a second run with windows twice as long.
UNSTABLE_TOOL = "perf_analyzer (unstable)"
#: perf_analyzer's own ``--measurement-interval`` when none is given (ms).
DEFAULT_WINDOW_MS = 5000
#: How long ``run`` lets one perf_analyzer call run (s).
RUN_TIMEOUT_S = 600
_LOADER_ERRORS = re.compile(
    r"error while loading shared libraries|GLIBC_\d|GLIBCXX_\d|not found \(required by|"
    r"cannot execute binary file|Exec format error",
    re.IGNORECASE,
)


class PerfAnalyzerError(RuntimeError):
    """perf_analyzer is missing or failed; the message says why (with its stderr tail)."""


@dataclass(frozen=True)
class PerfAnalyzerLocation:
    """Where perf_analyzer runs from, or why it cannot run here (introduced in notebook 05)."""

    available: bool
    command: tuple[str, ...] = ()  # the prefix to put before perf_analyzer's arguments
    reason: str = ""
    source: str = "none"  # "path", "wheel", "docker" or "none"


def _wheel_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("perf-analyzer")
    except PackageNotFoundError:
        return None


def _probe(binary: str) -> str | None:
    """``None`` when ``binary`` starts; otherwise the loader's complaint."""
    try:
        result = subprocess.run(  # noqa: S603 - fixed argument list
            [binary, "--help"], capture_output=True, text=True, timeout=30
        )
    except OSError as error:
        return str(error)
    except subprocess.TimeoutExpired:
        return None  # it started, it just did not exit: runnable
    output = result.stdout + result.stderr
    complaints = [line.strip() for line in output.splitlines() if _LOADER_ERRORS.search(line)]
    return complaints[0] if complaints else None


def docker_command(results_dir: Path | None = None) -> tuple[str, ...]:
    """``docker run`` prefix for perf_analyzer in the NGC SDK image (notebook 05).

    Host networking reaches a server on 127.0.0.1, host IPC lets ``--shared-memory=system``
    work, and the results folder is mounted at the same path so ``-f`` CSVs land on the host.
    """
    results = Path(results_dir) if results_dir is not None else build_dir("perf_analyzer")
    return (
        "docker",
        "run",
        "--rm",
        "--net=host",
        "--ipc=host",
        "-v",
        f"{results}:{results}",
        SDK_IMAGE,
        "perf_analyzer",
    )


def find_perf_analyzer(use_docker: bool = True) -> PerfAnalyzerLocation:
    """Find a runnable perf_analyzer: PATH, the wheel's binary, then the NGC SDK image (notebook 05)."""
    checked: list[str] = []
    candidates: list[tuple[str, str]] = []
    on_path = shutil.which("perf_analyzer")
    if on_path:
        candidates.append(("path", on_path))
    venv_binary = Path(sys.executable).parent / "perf_analyzer"
    if venv_binary.is_file() and str(venv_binary) != on_path:
        candidates.append(("wheel", str(venv_binary)))
    for source, binary in candidates:
        problem = _probe(binary)
        if problem is None:
            return PerfAnalyzerLocation(True, (binary,), f"{binary} runs", source)
        checked.append(f"{binary}: {problem}")
    if not candidates:
        checked.append("perf_analyzer is not on PATH nor in this Python's bin folder")
    wheel = _wheel_version()
    if wheel is None:
        hint = "the perf-analyzer wheel is not installed"
    elif wheel.startswith("0.1"):
        hint = f"perf-analyzer {wheel} is the placeholder pip picks where no real wheel fits"
    else:
        hint = f"perf-analyzer {wheel} is installed but its binary did not run"
    glibc = glibc_version()
    if glibc is not None and glibc < WHEEL_MIN_GLIBC:
        hint += (
            f"; its wheels need glibc >= {WHEEL_MIN_GLIBC[0]}.{WHEEL_MIN_GLIBC[1]} "
            f"(Ubuntu 24.04, Debian 13) and this system has glibc {glibc[0]}.{glibc[1]}"
        )
    checked.append(hint)
    if use_docker:
        if docker_engine_available()[0]:
            reason = f"runs in {SDK_IMAGE} through Docker"
            return PerfAnalyzerLocation(True, docker_command(), reason, "docker")
        checked.append("no Docker engine answers (for the NGC -py3-sdk image)")
    return PerfAnalyzerLocation(False, (), "; ".join(checked), "none")


def build_command(
    model: str,
    url: str = "127.0.0.1:8001",
    protocol: str = "grpc",
    concurrency: int = 1,
    shape: Mapping[str, Sequence[int]] | None = None,
    measurement_interval_ms: int | None = None,
    shared_memory: str = "none",
    output_shared_memory_size: int | None = None,
    csv_path: str | os.PathLike[str] | None = None,
    batch_size: int = 1,
    extra: Iterable[str] = (),
    prefix: Sequence[str] = ("perf_analyzer",),
) -> list[str]:
    """perf_analyzer's argument list for one concurrency level (never a shell string) (notebook 05).

    ``shape`` maps input names to shapes without the batch dimension
    (``{"images": (3, 640, 640)}`` -> ``--shape=images:3,640,640``); ``extra`` is appended as is.
    """
    if not model or model.startswith("-"):
        raise ValueError(f"invalid model name {model!r}")
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if shared_memory not in SHARED_MEMORY:
        raise ValueError(f"shared_memory must be one of {SHARED_MEMORY}, got {shared_memory!r}")
    if concurrency < 1 or batch_size < 1:
        raise ValueError(
            f"concurrency and batch_size must be >= 1, got {concurrency}, {batch_size}"
        )
    command = [*prefix, "-m", model, "-u", url, "-i", protocol]
    command.append(f"--concurrency-range={concurrency}:{concurrency}")
    if batch_size != 1:
        command += ["-b", str(batch_size)]
    for name, dims in (shape or {}).items():
        command.append(f"--shape={name}:" + ",".join(str(int(d)) for d in dims))
    if measurement_interval_ms is not None:
        command += ["--measurement-interval", str(int(measurement_interval_ms))]
    if shared_memory != "none":
        command.append(f"--shared-memory={shared_memory}")
        if output_shared_memory_size is not None:
            command.append(f"--output-shared-memory-size={int(output_shared_memory_size)}")
    if csv_path is not None:
        command += ["-f", str(csv_path)]
    command += [str(part) for part in extra]
    return command


def parse_csv(path: str | os.PathLike[str]) -> pd.DataFrame:
    """perf_analyzer's ``-f`` CSV -> ``RESULT_COLUMNS`` (notebook 05)."""
    raw = pd.read_csv(path).rename(columns=str.strip)
    if "Concurrency" not in raw.columns:
        raise ValueError(
            "not a perf_analyzer concurrency CSV (no 'Concurrency' column; request-rate runs "
            f"are not supported): columns {list(raw.columns)}"
        )
    missing = [c for c in CSV_COLUMNS if c not in raw.columns and c != "Avg latency"]
    if missing:
        raise ValueError(f"perf_analyzer CSV lacks columns {missing}")
    present = [c for c in CSV_COLUMNS if c in raw.columns]
    frame = raw[present].apply(pd.to_numeric, errors="coerce").rename(columns=CSV_COLUMNS)
    latencies = [c for c in frame.columns if c.endswith("_ms")]
    frame[latencies] /= 1000.0  # microseconds -> milliseconds
    frame["concurrency"] = frame["concurrency"].astype(int)
    if "latency_avg_ms" not in frame.columns:
        frame["latency_avg_ms"] = frame[list(LATENCY_COMPONENTS)].sum(axis=1)
    frame["tool"] = "perf_analyzer"
    return frame[list(RESULT_COLUMNS)].sort_values("concurrency").reset_index(drop=True)


def run(
    model: str,
    concurrency_levels: Sequence[int] = (1, 2, 4, 8),
    measurement_interval_ms: int | None = None,
    location: PerfAnalyzerLocation | None = None,
    results_dir: Path | None = None,
    progress: bool = True,
    **options: Any,
) -> pd.DataFrame:
    """Sweep concurrency levels with perf_analyzer; one CSV per level, one DataFrame back (notebook 05).

    ``options`` go to ``build_command``. Each level's CSV is ``level_csv(results_dir, model,
    level)``, with perf_analyzer's console output beside it (``console_path``).

    A level perf_analyzer cannot measure stably runs once more with windows twice as long;
    unstable again, its row has only ``concurrency`` and ``tool == UNSTABLE_TOOL`` (a note on
    stderr says so). Raises ``PerfAnalyzerError`` when no runnable perf_analyzer is found, or
    with the stderr tail when a run fails or runs past ``RUN_TIMEOUT_S``.
    """
    from tqdm.auto import tqdm

    location = location or find_perf_analyzer()
    if not location.available:
        raise PerfAnalyzerError(f"perf_analyzer cannot run here: {location.reason}")
    results = Path(results_dir) if results_dir is not None else build_dir("perf_analyzer")
    results.mkdir(parents=True, exist_ok=True)
    frames = []
    bar = tqdm(list(concurrency_levels), desc=f"perf_analyzer {model}", disable=not progress)
    for level in bar:
        bar.set_postfix(concurrency=level)
        csv_path = level_csv(results, model, level)
        window_ms = measurement_interval_ms
        # an unstable level is measured once more, with windows twice as long
        for attempt in (1, 2):
            csv_path.unlink(missing_ok=True)
            command = build_command(
                model,
                concurrency=level,
                measurement_interval_ms=window_ms,
                csv_path=csv_path,
                prefix=location.command,
                **options,
            )
            try:
                result = subprocess.run(  # noqa: S603 - an argument list, no shell
                    command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
                )
            except subprocess.TimeoutExpired as error:
                stderr = error.stderr or ""  # bytes on POSIX, even with text=True
                if isinstance(stderr, bytes):
                    stderr = stderr.decode(errors="replace")
                raise PerfAnalyzerError(
                    f"perf_analyzer at concurrency {level} ran past {RUN_TIMEOUT_S} s:\n"
                    + _tail(stderr)
                ) from None
            if csv_path.exists() or UNSTABLE not in result.stdout + result.stderr:
                break
            if attempt == 1:
                window_ms = 2 * (window_ms or DEFAULT_WINDOW_MS)
        else:  # unstable twice: the level is reported, without numbers, not raised
            print(
                f"perf_analyzer: no stable measurement for {model} at concurrency {level}, "
                f"also with {window_ms} ms windows; this point is left empty (NaN, tool "
                f"'{UNSTABLE_TOOL}'): the machine's load varied more than perf_analyzer's "
                "stability threshold (10 %) allows, so rerun it on a quieter machine",
                file=sys.stderr,
            )
            frames.append(pd.DataFrame([{"concurrency": level, "tool": UNSTABLE_TOOL}]))
            continue
        if result.returncode != 0 or not csv_path.exists():
            raise PerfAnalyzerError(
                f"perf_analyzer failed at concurrency {level} (exit {result.returncode}):\n"
                + _tail(result.stderr or result.stdout)
            )
        console_path(csv_path).write_text(result.stdout)  # what perf_analyzer printed
        frames.append(parse_csv(csv_path))
    return pd.concat(frames, ignore_index=True).reindex(columns=list(RESULT_COLUMNS))


def level_csv(results_dir: Path, model: str, level: int) -> Path:
    """Where ``run`` writes the CSV of one concurrency level: ``<results_dir>/<model>_c<level>.csv``."""
    return Path(results_dir) / f"{model}_c{level}.csv"


def console_path(csv_path: Path) -> Path:
    """Where ``run`` keeps perf_analyzer's console output beside its CSV (``<name>.txt``)."""
    return Path(csv_path).with_suffix(".txt")


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])
