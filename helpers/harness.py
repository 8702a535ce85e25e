"""One load harness for every service, so comparisons are fair (introduced in notebook 06).

A closed loop like ``perf_analyzer --concurrency-range``, run by the course's one engine
(``helpers.loadgen.closed_loop_window``): ``concurrency`` client threads, each with its own
keep-alive connection, send their next request as soon as the previous one returns. Every service gets the same client (raw HTTP
with ``http.client``), the same bytes, the same warm-up and the same measured window; the
only thing that changes is the URL and the envelope around the tensor:

* the FastAPI baseline: the float32 tensor as the body, its shape in ``X-Shape``;
* Triton: its HTTP/REST endpoint with the binary tensor extension (a small JSON header,
  its length in ``Inference-Header-Content-Length``, then the same raw bytes), built by
  ``triton_request`` of notebook 06's cell (``helpers.lessons.fastapi_vs_triton``).

Each row reports throughput, latency percentiles, errors, and the CPU the server process
(with its children: Triton's Python backend stubs), the client and everything else on the
machine used over the window, in cores (1.0 = one core busy for the whole window). The last
one says how quiet the machine was: other work competes with the server for the same cores.
"""

from __future__ import annotations

import http.client
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import psutil

from helpers.lessons.fastapi_vs_triton import split_triton_reply, triton_request
from helpers.loadgen import LATENCY_COLUMNS, closed_loop_window, latency_columns

#: Sends one request and checks the answer; raises on any failure.
Sender = Callable[[], None]

COLUMNS = [
    "service",
    "concurrency",
    "throughput_infer_per_s",
    *LATENCY_COLUMNS,
    "errors",
    "requests",
    "window_s",
    "server_cpu_cores",
    "client_cpu_cores",
    "other_cpu_cores",
    "first_error",
]


class RequestFailed(RuntimeError):
    """A request got a non-200 answer or an answer of the wrong size."""


@dataclass
class Target:
    """A service to load: a name, a factory of per-thread senders, the server's pid (notebook 06)."""

    name: str
    new_sender: Callable[[], Sender]
    pid: int | None = None
    batch_size: int = 1


def http_sender(
    url: str, path: str, body: bytes, headers: dict[str, str], check: Callable[[Any, bytes], None]
) -> Sender:
    """A sender with its own keep-alive HTTP connection; ``check(reply, data)`` validates (notebook 06)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=120)

    def send() -> None:
        try:
            connection.request("POST", path, body=body, headers=headers)
            reply = connection.getresponse()
            data = reply.read()
        except Exception:
            connection.close()  # reconnect on the next request
            raise
        check(reply, data)

    return send


def fastapi_target(name: str, url: str, images: np.ndarray, pid: int | None) -> Target:
    """POST the tensor to the FastAPI baseline's /predict (introduced in notebook 06)."""
    images = np.ascontiguousarray(images, dtype=np.float32)
    body = images.tobytes()
    headers = {
        "Content-Type": "application/octet-stream",
        "X-Shape": ",".join(map(str, images.shape)),
    }
    expected = images.shape[0] * 84 * 8400 * 4

    def check(reply: Any, data: bytes) -> None:
        if reply.status != 200:
            raise RequestFailed(f"HTTP {reply.status}: {data[:300].decode(errors='replace')}")
        if len(data) != expected:
            raise RequestFailed(f"answer has {len(data)} bytes, expected {expected}")

    return Target(
        name,
        lambda: http_sender(url, "/predict", body, headers, check),
        pid,
        images.shape[0],
    )


def triton_http_target(
    name: str,
    url: str,
    model: str,
    images: np.ndarray,
    pid: int | None,
    input_name: str = "images",
    output_name: str = "output0",
) -> Target:
    """POST the same tensor to Triton's HTTP/REST endpoint, binary data (introduced in notebook 06)."""
    body, headers = triton_request(images, input_name, output_name)
    expected = images.shape[0] * 84 * 8400 * 4
    path = f"/v2/models/{model}/infer"
    base = url if url.startswith("http://") else f"http://{url}"

    def check(reply: Any, data: bytes) -> None:
        if reply.status != 200:
            raise RequestFailed(f"HTTP {reply.status}: {data[:300].decode(errors='replace')}")
        _, output = split_triton_reply(reply.headers, data)
        if len(output) != expected:
            raise RequestFailed(f"output has {len(output)} bytes, expected {expected}")

    return Target(
        name,
        lambda: http_sender(base, path, body, headers, check),
        pid,
        images.shape[0],
    )


def cpu_seconds(pid: int | None, children: bool = True) -> float:
    """User + system CPU seconds of a process and its live descendants (notebook 06)."""
    if pid is None:
        return float("nan")
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)] if children else [root]
    except psutil.NoSuchProcess:
        return float("nan")
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine spent busy (all processes, all cores) (notebook 06)."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def measure(
    target: Target, concurrency: int, *, warmup_s: float = 2.0, window_s: float = 5.0
) -> dict[str, Any]:
    """Load ``target`` at one concurrency: warm up, then one measured window; one row (notebook 06).

    A failed request is counted (``errors``) and its thread goes on; ``first_error`` says why.
    """
    client = psutil.Process().pid

    def cpu() -> tuple[float, float, float]:
        return cpu_seconds(target.pid), cpu_seconds(client, False), busy_cpu_seconds()

    window = closed_loop_window(
        [target.new_sender() for _ in range(concurrency)],
        warmup_s=warmup_s,
        window_s=window_s,
        stop_on_error=False,
        sample=cpu,
    )
    elapsed = window.seconds
    server, client_cores, machine = ((a - b) / elapsed for a, b in zip(window.after, window.before))
    return {
        "service": target.name,
        "concurrency": concurrency,
        "throughput_infer_per_s": len(window.requests) * target.batch_size / elapsed,
        **latency_columns(window.latencies_ms()),
        "errors": len(window.errors),
        "requests": len(window.requests),
        "window_s": elapsed,
        "server_cpu_cores": server,
        "client_cpu_cores": client_cores,
        "other_cpu_cores": max(machine - server - client_cores, 0.0),
        "first_error": str(window.first_error) if window.first_error else "",
    }


def sweep(
    targets: Sequence[Target],
    concurrencies: Sequence[int],
    *,
    warmup_s: float = 2.0,
    window_s: float = 5.0,
    progress: bool = True,
) -> pd.DataFrame:
    """Every target at every concurrency, interleaved level by level; one row each (notebook 06).

    Interleaving (A@1, B@1, A@8, B@8, ...) spreads any background load on the machine over
    all services instead of penalising whichever ran last.
    """
    from tqdm.auto import tqdm

    runs = [(c, t) for c in concurrencies for t in targets]
    rows = []
    bar = tqdm(runs, desc="load", unit="run", disable=not progress)
    for concurrency, target in bar:
        bar.set_postfix(service=target.name, concurrency=concurrency)
        rows.append(measure(target, concurrency, warmup_s=warmup_s, window_s=window_s))
    return pd.DataFrame(rows, columns=COLUMNS)


def ratios(frame: pd.DataFrame, numerator: str, denominator: str) -> pd.DataFrame:
    """Per concurrency: throughput and p99 of ``numerator`` / ``denominator`` (notebook 06)."""
    table = frame.pivot(
        index="concurrency", columns="service", values=["throughput_infer_per_s", "latency_p99_ms"]
    )
    return pd.DataFrame(
        {
            "throughput_ratio": table["throughput_infer_per_s"][numerator]
            / table["throughput_infer_per_s"][denominator],
            "p99_ratio": table["latency_p99_ms"][numerator] / table["latency_p99_ms"][denominator],
        }
    )
