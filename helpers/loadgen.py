"""The course's one load engine: a closed loop, measured like perf_analyzer (notebooks 05 and 07).

``concurrency`` client threads each send their next request as soon as the previous one
returns, like ``perf_analyzer --concurrency-range`` (``closed_loop_window``). After a warm-up
it measures fixed windows until the throughput of the last three agrees within 10%
(perf_analyzer's stability rule) or ``max_windows`` is reached. What is loaded is a
``Target``: a name and a factory of per-thread senders. ``measure`` runs one target at one
concurrency and returns one row: throughput, average and p50/p90/p95/p99 latency
(``percentiles``), errors, and the CPU the server process (with its children: Triton's Python
backend stubs), the client and everything else on the machine used over the window, in cores
(1.0 = one core busy for the whole window). A target that names a Triton model adds the
server-side split (queue, compute input/infer/output) from the statistics API
(``helpers.statistics.model_stats``: consistent snapshots) over exactly the measured window.
``sweep`` runs every target at every concurrency, interleaved. The same engine drives
notebook 05's fallback generator (``helpers.measure``), notebook 07's FastAPI-vs-Triton
comparison, notebook 06's throughput cells (``helpers.lessons.whisper``) and ``tools/bench``, so a p99
means the same thing everywhere.

Targets:

* ``triton_target``: requests built once with ``tritonclient`` (gRPC or HTTP), as perf_analyzer
  builds its own (``tools/bench/shm.py`` places their tensors in system shared memory, as
  ``perf_analyzer --shared-memory=system`` does).
* ``fastapi_target`` and ``triton_http_target`` (notebook 07): every service gets the same
  client (raw HTTP with ``http.client``, one keep-alive connection per thread) and the same
  bytes; only the URL and the envelope around the tensor change: the FastAPI baseline takes
  the float32 tensor as the body, its shape in ``X-Shape``; Triton's HTTP/REST endpoint the
  binary tensor extension (a small JSON header, its length in
  ``Inference-Header-Content-Length``, then the same raw bytes), built by ``triton_request``
  of notebook 07's cell (``helpers.lessons.fastapi_vs_triton``).
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import psutil

from helpers.clients import client_module
from helpers.lessons.fastapi_vs_triton import split_triton_reply, triton_request
from helpers.statistics import ModelStats, model_stats

#: perf_analyzer's default stability rule: the last 3 windows within 10% of their mean.
STABILITY_WINDOWS = 3
STABILITY_TOLERANCE = 0.10
#: A window in which no request finished measured nothing: it is stretched until one does, at most this long.
EMPTY_WINDOW_LIMIT_S = 60.0
#: The latency percentiles every load generator of the course reports.
PERCENTILES: tuple[int, ...] = (50, 90, 95, 99)
#: How they are computed: numpy's default, interpolating linearly between the two closest
#: samples. (perf_analyzer takes the sample nearest to rank p/100 * (n - 1) instead; over the
#: hundreds of requests of a window the two differ by less than the gap between two samples.)
PERCENTILE_METHOD = "linear"
#: The latency columns a result row has: the mean, then each of ``PERCENTILES``.
LATENCY_COLUMNS: tuple[str, ...] = ("latency_avg_ms", *(f"latency_p{p}_ms" for p in PERCENTILES))


class LoadError(RuntimeError):
    """Requests failed during a measurement; the message holds the first error."""


class RequestFailed(RuntimeError):
    """A request got a non-200 answer or an answer of the wrong size."""


#: Sends one request and waits for its answer; returns None, or what the request was worth
#: (audio seconds, images...) for ``Window.total``. Raises when the request failed. A sender
#: with a ``close`` attribute is closed after the measurement.
Send = Callable[[], Any]


@dataclass
class Target:
    """A service to load: a name, a factory of per-thread senders, the server's pid (notebook 07).

    ``stats``, when given, reads the served model's statistics (a ``ModelStats``) at both
    ends of the measured window.
    """

    name: str
    new_sender: Callable[[], Send]
    pid: int | None = None
    batch_size: int = 1
    stats: Callable[[], ModelStats] | None = None


@dataclass
class Payload:
    """One request's inputs as numpy arrays (name -> array, batch dimension included)."""

    arrays: dict[str, np.ndarray]
    outputs: Sequence[str] = ()

    @property
    def batch_size(self) -> int:
        return int(next(iter(self.arrays.values())).shape[0])


@dataclass
class Prepared:
    """One thread's sender: its request, ready to send again and again, and what it holds open.

    Over gRPC it sends a ``ModelInferRequest`` built once, through the generated stub, as
    perf_analyzer reuses its requests: the per-request Python work is then one call, so the
    client's own overhead (and the Python GIL) shapes the arrival of requests at the dynamic
    batcher as little as it can. Over HTTP it uses ``tritonclient.http``'s ``infer``.
    """

    client: Any  # tritonclient client
    send: Callable[[], Any] = lambda: None  # one inference; returns the response
    cleanups: list[Callable[[], Any]] = field(default_factory=list)  # ``close`` runs them

    def __call__(self) -> None:
        self.send()  # keeps no response: each can be megabytes

    def close(self) -> None:
        """Run the cleanups, last registered first, then close the client (best effort)."""
        for cleanup in [*reversed(self.cleanups), self.client.close]:
            try:
                cleanup()
            except Exception:  # noqa: BLE001 - the server may be gone; the rest still runs
                pass
        self.cleanups.clear()


#: Tensors of one request: input name -> (array, its bytes, shared memory region or None),
#: output name -> (region or None, its byte size).
Inputs = dict[str, tuple[np.ndarray, bytes, str | None]]
Outputs = dict[str, tuple[str | None, int]]


def prepare(
    protocol: str,
    url: str,
    model: str,
    payload: Payload,
    place: Callable[[Prepared, Inputs, Outputs], None] | None = None,
) -> Prepared:
    """A client of its own for one thread, and its request, ready to send.

    ``place(prepared, inputs, outputs)``, when given, may name a shared memory region for
    each tensor before the request is built (``tools/bench/shm.py``).
    """
    module = client_module(protocol)
    prepared = Prepared(module.InferenceServerClient(url))
    try:
        inputs: Inputs = {}
        for name, array in payload.arrays.items():
            array = np.ascontiguousarray(array)
            inputs[name] = (array, _raw(array), None)
        outputs: Outputs = {name: (None, 0) for name in payload.outputs}
        if place is not None:
            place(prepared, inputs, outputs)
        if protocol == "grpc":
            _grpc_sender(prepared, url, model, inputs, outputs)
        else:
            _http_sender(prepared, module, url, model, inputs, outputs)
    except BaseException:
        prepared.close()
        raise
    return prepared


def _raw(array: np.ndarray) -> bytes:
    """The tensor's bytes as Triton reads them (BYTES tensors: each element length-prefixed)."""
    if array.dtype == np.object_ or array.dtype.kind == "S":
        from tritonclient.utils import serialize_byte_tensor

        serialized = serialize_byte_tensor(array)
        return serialized.item() if serialized.size else b""
    return array.tobytes()


def _grpc_sender(
    prepared: Prepared,
    url: str,
    model: str,
    inputs: Inputs,
    outputs: Outputs,
) -> None:
    """Build the ``ModelInferRequest`` once; ``send`` passes it to the generated gRPC stub."""
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc
    from tritonclient.utils import np_to_triton_dtype

    def place(tensor: Any, region: str | None, byte_size: int) -> None:
        if region is not None:
            tensor.parameters["shared_memory_region"].string_param = region
            tensor.parameters["shared_memory_byte_size"].int64_param = byte_size

    request = service_pb2.ModelInferRequest(model_name=model)
    for name, (array, data, region) in inputs.items():
        tensor = request.inputs.add(
            name=name, datatype=np_to_triton_dtype(array.dtype), shape=list(array.shape)
        )
        place(tensor, region, len(data))
        if region is None:
            request.raw_input_contents.append(data)
    for name, (region, byte_size) in outputs.items():
        place(request.outputs.add(name=name), region, byte_size)
    unlimited = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    channel = grpc.insecure_channel(url, options=unlimited)
    prepared.cleanups.append(channel.close)
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)

    def send() -> Any:
        try:
            return stub.ModelInfer(request)
        except grpc.RpcError as error:
            raise LoadError(f"{error.code().name}: {error.details()}") from None

    prepared.send = send


def _http_sender(
    prepared: Prepared,
    module: Any,
    url: str,
    model: str,
    inputs: Inputs,
    outputs: Outputs,
) -> None:
    """``send`` calls ``tritonclient.http``'s ``infer`` with inputs and outputs made once.

    The HTTP client (gevent underneath) must stay on the thread that made it, so ``send``
    opens its own on the first call, in the thread that sends.
    """
    from tritonclient.utils import np_to_triton_dtype

    tensors = []
    for name, (array, data, region) in inputs.items():
        tensor = module.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        if region is None:
            tensor.set_data_from_numpy(array)
        else:
            tensor.set_shared_memory(region, len(data))
        tensors.append(tensor)
    requested = []
    for name, (region, byte_size) in outputs.items():
        output = module.InferRequestedOutput(name)
        if region is not None:
            output.set_shared_memory(region, byte_size)
        requested.append(output)
    opened: list[Any] = []

    def send() -> Any:
        if not opened:
            opened.append(module.InferenceServerClient(url))
            prepared.cleanups.append(opened[0].close)
        return opened[0].infer(model, tensors, outputs=requested or None)

    prepared.send = send


def percentiles(values: Sequence[float], points: Sequence[float] = PERCENTILES) -> dict:
    """``{p: the p-th percentile of values}`` by ``PERCENTILE_METHOD``; NaN when there are none."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return {p: float("nan") for p in points}
    found = np.percentile(values, list(points), method=PERCENTILE_METHOD)
    return {p: float(v) for p, v in zip(points, found)}


def latency_columns(latencies_ms: Sequence[float]) -> dict[str, float]:
    """``LATENCY_COLUMNS`` of a window's request latencies in milliseconds (NaN when empty)."""
    mean = float(np.mean(latencies_ms)) if len(latencies_ms) else float("nan")
    found = percentiles(latencies_ms)
    return {"latency_avg_ms": mean} | {f"latency_p{p}_ms": v for p, v in found.items()}


@dataclass
class Window:
    """What ``closed_loop_window`` measured: the requests that ended inside ``[begin, end)``."""

    begin: float
    end: float
    requests: list[tuple[float, float, Any]]  # (start, end, what send returned)
    errors: list[BaseException]  # failures that ended inside the window
    first_error: BaseException | None  # the first failure of the whole run, warm-up included
    failures: int = 0  # failures in the whole run, warm-up included
    before: Any = None  # ``sample()`` when the window opened
    after: Any = None  # ``sample()`` when it closed

    @property
    def seconds(self) -> float:
        """How long the window lasted."""
        return self.end - self.begin

    def latencies_ms(self) -> np.ndarray:
        """Each request's latency in milliseconds."""
        return np.array([(end - start) * 1000 for start, end, _ in self.requests])

    def total(self) -> float:
        """The sum of what the requests were worth (what ``send`` returned)."""
        return float(sum(value or 0 for _, _, value in self.requests))


def closed_loop_window(
    senders: Sequence[Send],
    *,
    warmup_s: float = 2.0,
    warmup_requests: int = 0,
    window_s: float = 3.0,
    max_windows: int = 1,
    stop_on_error: bool = True,
    sample: Callable[[], Any] | None = None,
) -> Window:
    """Run one thread per sender, each sending again as soon as its answer arrives; measure.

    Each thread first sends ``warmup_requests`` unmeasured requests; once all have, the
    warm-up goes on for ``warmup_s``. Then windows of ``window_s`` follow until the
    throughput of the last ``STABILITY_WINDOWS`` agrees within ``STABILITY_TOLERANCE``
    (perf_analyzer's rule) or ``max_windows`` were measured; the measurement spans them all.
    A window in which no request finished is stretched until one does (at most
    ``EMPTY_WINDOW_LIMIT_S``): one request can outlast a short window on a busy machine.
    A failed request stops the run when ``stop_on_error`` (``Window.first_error`` says why);
    otherwise it is counted and the thread goes on after a short pause. ``sample()`` (CPU
    counters, server statistics) is taken when the window opens and, last, when it closes.
    """
    finished: list[tuple[float, float, Any]] = []
    failed: list[tuple[float, BaseException]] = []  # (end, error)
    stop = threading.Event()
    lock = threading.Lock()
    warmed = [threading.Event() for _ in senders]

    def attempt(send: Send) -> bool:
        start = time.perf_counter()
        try:
            value = send()
        except Exception as error:  # noqa: BLE001 - reported in the Window
            with lock:
                failed.append((time.perf_counter(), error))
            if stop_on_error:
                stop.set()
            else:
                time.sleep(0.05)  # a dead server must not turn the loop into a busy spin
            return False
        end = time.perf_counter()
        with lock:
            finished.append((start, end, value))
        return True

    def worker(index: int) -> None:
        for _ in range(warmup_requests):
            if stop.is_set():
                break
            attempt(senders[index])
        warmed[index].set()
        while not stop.is_set():
            attempt(senders[index])

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(len(senders))]
    for thread in threads:
        thread.start()
    try:
        for event in warmed:
            while not event.wait(0.1) and not stop.is_set():
                pass
        stop.wait(warmup_s)
        before = sample() if sample else None
        boundaries = [time.perf_counter()]
        rates: list[float] = []
        while len(rates) < max_windows and not stop.is_set():
            stop.wait(window_s)  # a failure with stop_on_error ends the window early
            # on a slow or busy machine one request can outlast a short window: wait for one
            limit = boundaries[-1] + max(window_s, EMPTY_WINDOW_LIMIT_S)
            while not stop.is_set() and time.perf_counter() < limit:
                with lock:
                    if any(boundaries[-1] <= end for _, end, _ in finished):
                        break
                stop.wait(0.05)
            boundaries.append(time.perf_counter())
            with lock:
                done = sum(1 for _, end, _ in finished if boundaries[-2] <= end < boundaries[-1])
            rates.append(done / (boundaries[-1] - boundaries[-2]))
            if len(rates) >= STABILITY_WINDOWS:
                last = rates[-STABILITY_WINDOWS:]
                mean = sum(last) / len(last)
                if mean > 0 and all(abs(r - mean) <= STABILITY_TOLERANCE * mean for r in last):
                    break
        after = sample() if sample else None
        boundaries[-1] = time.perf_counter()  # the window ends once the server was read
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
    begin, end = boundaries[0], boundaries[-1]
    with lock:
        return Window(
            begin,
            end,
            [r for r in finished if begin <= r[1] < end],
            [error for at, error in failed if begin <= at < end],
            failed[0][1] if failed else None,
            len(failed),
            before,
            after,
        )


def triton_target(
    url: str,
    model: str,
    payload: Payload,
    *,
    protocol: str = "grpc",
    place: Callable[[Prepared, Inputs, Outputs], None] | None = None,
    pid: int | None = None,
) -> Target:
    """``payload`` sent to ``model`` with ``tritonclient``, its statistics read (notebook 05).

    Each sender is a client of its own with its request built once (``prepare``, which
    passes ``place`` on).
    """

    def stats() -> ModelStats:
        with client_module(protocol).InferenceServerClient(url) as client:
            return model_stats(client, model)

    def new_sender() -> Prepared:
        return prepare(protocol, url, model, payload, place)

    return Target(model, new_sender, pid, payload.batch_size, stats)


def http_sender(
    url: str, path: str, body: bytes, headers: dict[str, str], check: Callable[[Any, bytes], None]
) -> Send:
    """A sender with its own keep-alive HTTP connection; ``check(reply, data)`` validates (notebook 07)."""
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

    send.close = connection.close  # type: ignore[attr-defined]
    return send


def _expect_bytes(
    expected: int, body: Callable[[Any, bytes], bytes]
) -> Callable[[Any, bytes], None]:
    """A ``check`` for ``http_sender``: HTTP 200 and ``expected`` bytes in ``body(reply, data)``."""

    def check(reply: Any, data: bytes) -> None:
        if reply.status != 200:
            raise RequestFailed(f"HTTP {reply.status}: {data[:300].decode(errors='replace')}")
        size = len(body(reply, data))
        if size != expected:
            raise RequestFailed(f"answer has {size} bytes, expected {expected}")

    return check


def fastapi_target(name: str, url: str, images: np.ndarray, pid: int | None) -> Target:
    """POST the tensor to the FastAPI baseline's /predict (introduced in notebook 07)."""
    images = np.ascontiguousarray(images, dtype=np.float32)
    body = images.tobytes()
    headers = {
        "Content-Type": "application/octet-stream",
        "X-Shape": ",".join(map(str, images.shape)),
    }
    check = _expect_bytes(images.shape[0] * 84 * 8400 * 4, lambda _reply, data: data)
    return Target(
        name, lambda: http_sender(url, "/predict", body, headers, check), pid, images.shape[0]
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
    """POST the same tensor to Triton's HTTP/REST endpoint, binary data (introduced in notebook 07)."""
    body, headers = triton_request(images, input_name, output_name)
    check = _expect_bytes(
        images.shape[0] * 84 * 8400 * 4,
        lambda reply, data: split_triton_reply(reply.headers, data)[1],
    )
    path = f"/v2/models/{model}/infer"
    base = url if url.startswith("http://") else f"http://{url}"
    return Target(name, lambda: http_sender(base, path, body, headers, check), pid, images.shape[0])


def cpu_seconds(pid: int | None, children: bool = True) -> float:
    """User + system CPU seconds of a process and its live descendants (notebook 07)."""
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
    """CPU seconds the whole machine spent busy (all processes, all cores) (notebook 07)."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def measure(
    target: Target,
    concurrency: int,
    *,
    warmup_s: float = 2.0,
    window_s: float = 5.0,
    max_windows: int = 1,
    stop_on_error: bool = False,
) -> dict[str, Any]:
    """Load ``target`` at one concurrency: warm up, then the measured windows; one row (notebook 07).

    A failed request is counted (``errors``) and its thread goes on; ``first_error`` says why.
    With ``stop_on_error`` the first failure (or a window without a finished request) raises
    ``LoadError`` instead.
    """
    client = psutil.Process().pid

    def sample() -> tuple[tuple[float, float, float], ModelStats | None]:
        cpu = cpu_seconds(target.pid), cpu_seconds(client, False), busy_cpu_seconds()
        return cpu, target.stats() if target.stats else None

    senders: list[Send] = []
    try:
        for _ in range(concurrency):
            senders.append(target.new_sender())
        window = closed_loop_window(
            senders,
            warmup_s=warmup_s,
            window_s=window_s,
            max_windows=max_windows,
            stop_on_error=stop_on_error,
            sample=sample,
        )
    finally:
        for sender in senders:
            getattr(sender, "close", lambda: None)()
    if stop_on_error and window.first_error is not None:
        raise LoadError(f"{window.failures} request(s) failed; first: {window.first_error}")
    if stop_on_error and not window.requests:
        raise LoadError(
            f"no request finished in {window.seconds:.1f} s at concurrency {concurrency}"
        )
    elapsed = window.seconds
    (cpu_before, stats_before), (cpu_after, stats_after) = window.before, window.after
    server, client_cores, machine = ((a - b) / elapsed for a, b in zip(cpu_after, cpu_before))
    row = {
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
    if stats_after is not None:
        delta = stats_after - stats_before
        row |= {f"server_{phase}_ms": ms for phase, ms in delta.phase_ms().items()}
        row["server_success_delta"] = delta.success_count
        row["server_executions_delta"] = delta.execution_count
    return row


def sweep(
    targets: Sequence[Target],
    concurrencies: Sequence[int],
    *,
    progress: bool = True,
    **options: Any,
) -> pd.DataFrame:
    """Every target at every concurrency, interleaved level by level; one row each (notebook 07).

    Interleaving (A@1, B@1, A@8, B@8, ...) spreads any background load on the machine over
    all targets instead of penalising whichever ran last. ``options`` go to ``measure``.
    """
    from tqdm.auto import tqdm

    runs = [(c, t) for c in concurrencies for t in targets]
    rows = []
    bar = tqdm(runs, desc="load", unit="run", disable=not progress)
    for concurrency, target in bar:
        bar.set_postfix(service=target.name, concurrency=concurrency)
        rows.append(measure(target, concurrency, **options))
    return pd.DataFrame(rows)


def ratios(frame: pd.DataFrame, numerator: str, denominator: str) -> pd.DataFrame:
    """Per concurrency: throughput and p99 of ``numerator`` / ``denominator`` (notebook 07)."""
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
