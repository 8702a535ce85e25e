# Generated from notebooks/10_scaling_out.ipynb by `make export`: do not edit.
# Edit the cells marked `#| export replicas` there, then run `make export`.


# ---- cell background-load
import threading
import time
from collections.abc import Callable
from typing import Any

import pandas as pd

MAX_SECONDS = 120.0  # hard limits of every background load (loopback only, bounded in count and time)
MAX_REQUESTS = 50_000


class BackgroundLoad:
    """Threads sending requests until stopped, each request recorded (notebook 10).

    ``make_send()`` is called once per thread and returns that thread's ``send()``: a function
    sending one request and returning what to record (e.g. the model version that answered).
    Bounded: stops after ``max_seconds`` or ``max_requests``, whichever comes first.
    """

    def __init__(
        self,
        make_send: Callable[[], Callable[[], Any]],
        concurrency: int = 4,
        max_seconds: float = 60.0,
        max_requests: int = 20_000,
    ) -> None:
        self.make_send, self.concurrency = make_send, concurrency
        self.max_seconds = min(max_seconds, MAX_SECONDS)
        self.max_requests = min(max_requests, MAX_REQUESTS)
        self.records: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.t0 = 0.0

    def start(self) -> "BackgroundLoad":
        """Start the sending threads."""
        self.t0 = time.monotonic()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True)
            for i in range(self.concurrency)
        ]
        for thread in self._threads:
            thread.start()
        return self

    def _run(self, worker: int) -> None:
        send = self.make_send()
        deadline = self.t0 + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            with self._lock:
                if len(self.records) >= self.max_requests:
                    return
            start = time.monotonic()
            try:
                result, ok, error = send(), True, ""
            except Exception as exc:  # a failed request is what we count
                result, ok, error = None, False, str(exc)[-200:]
            record = {
                "worker": worker,
                "start": start - self.t0,
                "end": time.monotonic() - self.t0,
                "ok": ok,
                "error": error,
                "result": result,
            }
            with self._lock:
                self.records.append(record)

    def elapsed(self) -> float:
        """Seconds since the load started."""
        return time.monotonic() - self.t0

    def stop(self) -> pd.DataFrame:
        """Stop sending, wait for the requests in flight, return ``frame()``."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)
        return self.frame()

    def frame(self) -> pd.DataFrame:
        """One row per request: worker, start, end (s since start), ok, error, result."""
        with self._lock:
            rows = list(self.records)
        columns = ["worker", "start", "end", "ok", "error", "result"]
        return pd.DataFrame(rows, columns=columns).sort_values("start", ignore_index=True)

    def __enter__(self) -> "BackgroundLoad":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# ---- cell failover-code
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from tritonclient.utils import InferenceServerException

from helpers.statistics import model_stats


def wait_serving(server: Any, model: str, since: int, timeout: float = 60.0) -> float:
    """Wait until the replica served more than ``since`` requests of ``model``; return the seconds."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            with server.http_client() as client:
                if model_stats(client, model).success_count > since:
                    return time.monotonic() - start
        except (OSError, InferenceServerException):  # not up yet, or the model not loaded yet
            pass
        time.sleep(0.02)
    raise TimeoutError(f"{server.http_url} served no {model} request within {timeout:.0f} s")


@dataclass
class FailoverResult:
    """What killing and restarting one replica under load did (notebook 10)."""

    requests: pd.DataFrame
    killed_at: float  # s since the load started
    out_of_rotation_s: float  # kill -> the proxy's health check marks it unhealthy
    restarted_at: float
    restart_to_healthy_s: float  # restart begun -> the proxy sees it healthy again
    restart_to_serving_s: float  # restart begun -> it answers a request of the load again

    def summary(self) -> dict[str, float]:
        """Requests sent and failed, and the three durations, rounded."""
        return {
            "requests": len(self.requests),
            "failed": int((~self.requests["ok"]).sum()),
            "out_of_rotation_s": round(self.out_of_rotation_s, 2),
            "restart_to_healthy_s": round(self.restart_to_healthy_s, 2),
            "restart_to_serving_s": round(self.restart_to_serving_s, 2),
        }


def kill_and_restart(
    proxy: Any,
    victim: Any,
    model: str,
    make_send: Callable[[], Callable[[], Any]],
    concurrency: int = 4,
    warmup_s: float = 1.0,
    down_s: float = 1.0,
    after_s: float = 1.0,
) -> FailoverResult:
    """Kill one replica (SIGKILL) under load, later restart it; time what the proxy did."""
    address = f"{victim.host}:{victim.ports.http}"
    with BackgroundLoad(make_send, concurrency) as load:
        time.sleep(warmup_s)
        killed_at = load.elapsed()
        victim.process.kill()  # no goodbye: what a crashed process or a lost node looks like
        out = proxy.wait_health(address, False)
        time.sleep(down_s)
        restarted_at = load.elapsed()
        victim.start()  # same ports: what a restarted pod behind the same Service looks like
        healthy = load.elapsed() - restarted_at + proxy.wait_health(address, True)
        serving = load.elapsed() - restarted_at + wait_serving(victim, model, 0)
        time.sleep(after_s)
    return FailoverResult(load.frame(), killed_at, out, restarted_at, healthy, serving)


@dataclass
class RollingResult:
    """What replacing each replica in turn under load did (notebook 10)."""

    requests: pd.DataFrame
    steps: pd.DataFrame  # per replica: stopped at, ready at, healthy in the proxy at

    def summary(self) -> dict[str, Any]:
        """Requests sent and failed, and what answered them (result counts)."""
        return {
            "requests": len(self.requests),
            "failed": int((~self.requests["ok"]).sum()),
            "answers": self.requests["result"].value_counts().to_dict(),
            "took_s": round(float(self.steps["healthy_at"].max()), 2),
        }


def rolling_replace(
    proxy: Any,
    replicas: Sequence[Any],
    make_send: Callable[[], Callable[[], Any]],
    concurrency: int = 4,
    warmup_s: float = 1.0,
    after_s: float = 1.0,
) -> RollingResult:
    """Replace the replicas one at a time under load, as a Deployment's rolling update does.

    Each replica is stopped gracefully (SIGTERM: Triton finishes what it has in flight),
    started again on the same ports (it loads what the repository holds now, e.g. a new
    model version), and the next one waits until the proxy sees this one healthy.
    """
    steps = []
    with BackgroundLoad(make_send, concurrency) as load:
        time.sleep(warmup_s)
        for replica in replicas:
            address = f"{replica.host}:{replica.ports.http}"
            stopped_at = load.elapsed()
            replica.stop()
            replica.start()
            ready_at = load.elapsed()
            proxy.wait_health(address, True)
            steps.append(
                {
                    "replica": address,
                    "stopped_at": stopped_at,
                    "ready_at": ready_at,
                    "healthy_at": load.elapsed(),
                }
            )
        time.sleep(after_s)
    return RollingResult(load.frame(), pd.DataFrame(steps))


# ---- cell autoscaling-signal
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from helpers.metrics import parse_metrics, scrape
from helpers.statistics import read_statistics


@dataclass(frozen=True)
class QueueSnapshot:
    """Per-model cumulative queue time and successes, from /metrics and from the stats API."""

    time: float
    metrics_queue_us: dict[str, float]
    metrics_success: dict[str, float]
    stats_queue_ns: dict[str, float]
    stats_success: dict[str, float]


def queue_snapshot(server: Any) -> QueueSnapshot:
    """Scrape ``/metrics`` and read the statistics API of one server, one after the other."""
    now = time.monotonic()
    frame = parse_metrics(scrape(server.metrics_url))

    def per_model(metric: str) -> dict[str, float]:
        rows = frame[frame["metric"] == metric]
        return rows.groupby("model")["value"].sum().to_dict()

    with server.http_client() as client:
        stats = read_statistics(client)
    queue_ns = {name: float(one.queue_ns) for name, one in stats.items()}
    success = {name: float(one.success_count) for name, one in stats.items()}
    return QueueSnapshot(
        now,
        per_model("nv_inference_queue_duration_us"),
        per_model("nv_inference_request_success"),
        queue_ns,
        success,
    )


def _delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before.get(name, 0.0) for name in after}


def queue_ms_per_request(before: QueueSnapshot, after: QueueSnapshot) -> float:
    """The course's adapter rule on /metrics: sum of queue time / sum of requests, in ms.

    ``sum(delta(nv_inference_queue_duration_us)) by (pod) /
    clamp_min(sum(delta(nv_inference_request_success)) by (pod), 1) / 1000``:
    sums over every model of the pod before dividing (deploy/helm/triton/values.yaml).
    """
    queue = sum(_delta(after.metrics_queue_us, before.metrics_queue_us).values())
    requests = sum(_delta(after.metrics_success, before.metrics_success).values())
    return queue / max(requests, 1.0) / 1000.0


def chart_rule_ms(before: QueueSnapshot, after: QueueSnapshot) -> float:
    """Triton's k8s-onprem chart rule: the AVERAGE over per-model series of queue/(1+requests).

    Models with no traffic count as 0, so with N models loaded and one busy it reports about
    1/N of the real queue time (triton-inference-server/server#8979).
    """
    queue = _delta(after.metrics_queue_us, before.metrics_queue_us)
    requests = _delta(after.metrics_success, before.metrics_success)
    values = [queue[name] / (1.0 + requests.get(name, 0.0)) for name in queue]
    return sum(values) / max(len(values), 1) / 1000.0


def stats_queue_ms_per_request(before: QueueSnapshot, after: QueueSnapshot) -> float:
    """The same quantity from Triton's statistics API (ns, exact counts), in ms."""
    queue = sum(_delta(after.stats_queue_ns, before.stats_queue_ns).values())
    requests = sum(_delta(after.stats_success, before.stats_success).values())
    return queue / max(requests, 1.0) / 1e6


def hpa_desired_replicas(
    current: int,
    value: float,
    target: float,
    min_replicas: int = 1,
    max_replicas: int = 10,
    tolerance: float = 0.1,
) -> int:
    """What the HPA computes: ``ceil(current * value / target)``, unchanged within tolerance."""
    ratio = value / target
    if abs(ratio - 1.0) <= tolerance:
        return current
    return max(min_replicas, min(max_replicas, math.ceil(current * ratio)))


def queue_signal_over_time(
    server: Any,
    make_send: Callable[[], Callable[[], Any]],
    concurrency_steps: Sequence[int],
    step_seconds: float,
    scrape_every: float,
    target_ms: float,
    current_replicas: int = 1,
) -> pd.DataFrame:
    """Rising load on one server; per scrape interval, the queue time per request three ways.

    Columns: ``t`` (s), ``concurrency``, ``adapter_rule_ms`` (the course's rule on /metrics),
    ``chart_rule_ms`` (Triton's k8s-onprem rule, server#8979), ``stats_api_ms`` (statistics
    API) and ``desired_replicas`` (what an HPA with ``target_ms`` would ask for).
    """
    rows = []
    t0 = time.monotonic()
    previous = queue_snapshot(server)
    for concurrency in concurrency_steps:
        with BackgroundLoad(make_send, concurrency, max_seconds=step_seconds + 5):
            end = time.monotonic() + step_seconds
            while time.monotonic() < end:
                time.sleep(scrape_every)
                snapshot = queue_snapshot(server)
                value = queue_ms_per_request(previous, snapshot)
                rows.append(
                    {
                        "t": snapshot.time - t0,
                        "concurrency": concurrency,
                        "adapter_rule_ms": value,
                        "chart_rule_ms": chart_rule_ms(previous, snapshot),
                        "stats_api_ms": stats_queue_ms_per_request(previous, snapshot),
                        "desired_replicas": hpa_desired_replicas(
                            current_replicas, value, target_ms
                        ),
                    }
                )
                previous = snapshot
    return pd.DataFrame(rows)
