"""Replicas behind a real proxy, and the autoscaling signal (notebook 10), on loopback only.

Two real embedded Triton replicas serve the tiny ONNX model behind Envoy (deploy/envoy/
envoy.yaml). Every load here is bounded (at most a few seconds, a few
thousand requests: helpers.lessons.replicas) and goes to 127.0.0.1.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from helpers.lessons.replicas import (
    BackgroundLoad,
    chart_rule_ms,
    hpa_desired_replicas,
    kill_and_restart,
    queue_ms_per_request,
    queue_snapshot,
    rolling_replace,
    stats_queue_ms_per_request,
)
from helpers.processes import is_alive, wait_until_gone
from helpers.proxy import EnvoyProxy, envoy_config
from helpers.scaling import model_successes
from helpers.server import TritonServer
from helpers.statistics import StatisticsWarning, settled_stats
from tests.scaling_models import (
    DELAY_MS,
    MODEL,
    SLOW_MODEL,
    add_version,
    sample,
    scaling_repository,
    started_replicas,
    successes_since,
)

pytestmark = pytest.mark.usefixtures("no_leftover_server_processes")


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return scaling_repository(tmp_path_factory.mktemp("scaling") / "repository")


@pytest.fixture(scope="module")
def replicas(repository: Path):
    with started_replicas(repository, MODEL) as servers:
        yield servers


@pytest.fixture(scope="module")
def proxy(replicas):
    with EnvoyProxy(replicas) as running:
        running.wait_all_healthy()
        pid = running.pid
        yield running
    assert not is_alive(pid)


#: Image side of the load's requests: a 640x640 float32 body is 4.9 MB, more than Envoy's
#: default 1 MiB buffer, so retries work only with the committed per_connection_buffer_limit_bytes.
LOAD_SIZE = 640


def http_sender(url: str):
    """A thread's send(): one HTTP inference through the proxy, returning the version."""
    client = httpclient.InferenceServerClient(url)
    image = httpclient.InferInput("images", [1, 3, LOAD_SIZE, LOAD_SIZE], "FP32")
    image.set_data_from_numpy(sample(LOAD_SIZE))

    def send() -> str:
        result = client.infer(MODEL, [image])
        assert result.as_numpy("scores").shape == (1, 4)
        return result.get_response()["model_version"]

    return send


def test_the_committed_config_is_what_runs():
    config = envoy_config([], 1, 2, 3, policy="LEAST_REQUEST", retries=False)
    clusters = config["static_resources"]["clusters"]
    assert [c["lb_policy"] for c in clusters] == ["LEAST_REQUEST", "LEAST_REQUEST"]
    assert all(
        c["health_checks"][0]["http_health_check"]["path"] == "/v2/health/ready" for c in clusters
    )
    routes = str(config["static_resources"]["listeners"])
    assert "retry_policy" not in routes
    assert "retry_policy" in str(envoy_config([], 1, 2, 3)["static_resources"]["listeners"])


def test_round_robin_splits_http_and_grpc_over_both_replicas(proxy, replicas):
    before = [model_successes(server, MODEL) for server in replicas]
    http = httpclient.InferenceServerClient(proxy.http_url)
    grpc = grpcclient.InferenceServerClient(proxy.grpc_url)
    h_input = httpclient.InferInput("images", [1, 3, 16, 16], "FP32")
    h_input.set_data_from_numpy(sample())
    g_input = grpcclient.InferInput("images", [1, 3, 16, 16], "FP32")
    g_input.set_data_from_numpy(sample())
    http_out = [http.infer(MODEL, [h_input]).as_numpy("scores") for _ in range(10)]
    grpc_out = [grpc.infer(MODEL, [g_input]).as_numpy("scores") for _ in range(10)]
    http.close()
    grpc.close()
    served = successes_since(replicas, MODEL, before, total=20)
    assert served == [10, 10]  # 5 HTTP + 5 gRPC each: strict alternation
    assert all(np.array_equal(out, http_out[0]) for out in http_out + grpc_out)
    envoy_counts = {h["cluster"]: [] for h in proxy.hosts()}
    for host in proxy.hosts():
        envoy_counts[host["cluster"]].append(host["rq_success"])
    assert all(min(counts) > 0 for counts in envoy_counts.values())


def test_killing_a_replica_under_load_loses_no_request(proxy, replicas):
    result = kill_and_restart(proxy, replicas[1], MODEL, lambda: http_sender(proxy.http_url))
    summary = result.summary()
    print("failover:", summary)
    frame = result.requests
    assert summary["failed"] == 0, frame[~frame["ok"]]["error"].value_counts()
    assert summary["requests"] > 20
    # requests kept succeeding while the replica was down, and it came back into rotation
    down = frame[(frame["start"] > result.killed_at) & (frame["end"] < result.restarted_at)]
    assert len(down) > 0 and down["ok"].all()
    assert summary["out_of_rotation_s"] < 5
    assert replicas[1].is_running() and proxy.healthy()[replicas[1].http_url]


def test_queue_time_from_metrics_matches_the_statistics_api(repository: Path):
    with TritonServer(repository, models=[SLOW_MODEL, MODEL]) as server:
        payload = np.ones(4, np.float32)

        def make_send():
            client = httpclient.InferenceServerClient(server.http_url)
            item = httpclient.InferInput("INPUT", [4], "FP32")
            item.set_data_from_numpy(payload)
            return lambda: client.infer(SLOW_MODEL, [item]).as_numpy("OUTPUT").shape

        before = queue_snapshot(server)
        with BackgroundLoad(make_send, concurrency=6, max_seconds=3) as load:
            time.sleep(2.0)
        answered = int(load.frame()["ok"].sum())
        # The load has stopped; once the statistics count every answer, so do the metrics
        # (Triton updates both in the same call).
        with server.http_client() as client:
            settled_stats(client, SLOW_MODEL, int(before.stats_success[SLOW_MODEL]) + answered)
        after = queue_snapshot(server)
    from_metrics = queue_ms_per_request(before, after)
    from_stats = stats_queue_ms_per_request(before, after)
    print(f"queue ms/request: metrics {from_metrics:.2f}, stats {from_stats:.2f}")
    # Tolerance: 1% (metrics hold whole microseconds, the statistics API nanoseconds).
    assert from_stats == pytest.approx(from_metrics, rel=0.01)
    # 6 clients, 1 instance, 20 ms per request: each waits for several others.
    assert from_metrics > 2 * DELAY_MS
    # The chart's rule averages over the 2 loaded models (one idle): about half (server#8979).
    assert chart_rule_ms(before, after) < 0.6 * from_metrics
    assert hpa_desired_replicas(1, from_metrics, target=from_metrics / 3) == 3
    assert hpa_desired_replicas(2, from_metrics, target=from_metrics * 1.05) == 2  # tolerance


def test_rolling_update_loses_no_request(proxy, replicas, repository: Path):
    add_version(repository, MODEL, 2)  # the new model: replicas load it when replaced
    result = rolling_replace(proxy, replicas, lambda: http_sender(proxy.http_url))
    summary = result.summary()
    print("rolling update:", summary)
    frame = result.requests
    assert summary["failed"] == 0, frame[~frame["ok"]]["error"].value_counts()
    assert set(summary["answers"]) == {"1", "2"}
    last = frame[frame["start"] > result.steps["healthy_at"].max()]
    assert len(last) > 0 and (last["result"] == "2").all()


def test_envoy_dies_with_the_process_that_started_it(replicas):
    script = (
        "import sys, time\n"
        "from helpers.proxy import EnvoyProxy, Replica\n"
        f"p = EnvoyProxy([Replica('127.0.0.1', {replicas[0].ports.http}, {replicas[0].ports.grpc})]).start()\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        envoy_pid = int(parent.stdout.readline())
        assert is_alive(envoy_pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        assert wait_until_gone([envoy_pid], 10) == []
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def test_successes_since_waits_for_a_count_that_lags(monkeypatch):
    """A replica's statistics may count the last request a moment after its answer."""
    import tests.scaling_models as scaling

    reads = {"a": iter([9, 9, 10]), "b": iter([10, 10, 10])}
    monkeypatch.setattr(scaling, "model_successes", lambda server, model: next(reads[server]))
    assert scaling.successes_since(["a", "b"], "m", [0, 0], total=20) == [10, 10]

    reads = {"a": iter(range(1000)), "b": iter([0] * 1000)}  # never reaches the total
    start = time.monotonic()
    with pytest.warns(StatisticsWarning, match="10000 m requests counted"):
        served = scaling.successes_since(["a", "b"], "m", [0, 0], total=10**4, timeout=0.2)
    assert time.monotonic() - start < 2 and served[1] == 0 and served[0] > 0
