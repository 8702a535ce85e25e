"""Many models, one server (notebook 09): what Triton's scheduler does, against a real server.

One embedded Triton with the rate limiter and a response cache serves copies of the committed
``timed_work`` (a Python model that sleeps a known time and reports when it ran),
``running_mean`` (sequence batching, state kept per correlation ID) and ``score_calibrator``
(versions 1 and 2). Each test loads the config variant it needs with the load request. The
margins are wide: two shared cores under other work must not flip a result, only its size.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from helpers.model_config import config_to_dict, read_config
from helpers.paths import MODEL_REPOSITORY
from helpers.server import ModelLoadError, TritonServer, rate_limit_arguments
from helpers.statistics import settled_stats

#: The rate limiter's one global resource: one execution at a time among those that ask for it.
EXCLUSIVE = "exclusive"


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("scheduling_repository")
    ignore = shutil.ignore_patterns("__pycache__")
    for name in ("timed_work", "running_mean", "score_calibrator"):
        shutil.copytree(MODEL_REPOSITORY / name, root / name, ignore=ignore)
    shutil.copytree(MODEL_REPOSITORY / "timed_work", root / "timed_work_b", ignore=ignore)
    config = root / "timed_work_b" / "config.pbtxt"
    config.write_text(config.read_text().replace('name: "timed_work"', 'name: "timed_work_b"'))
    return root


@pytest.fixture(scope="module")
def server(repository: Path, no_leftover_server_processes):
    with TritonServer(
        repository,
        cache_size=8 << 20,
        rate_limit=True,
        rate_limit_resources=[f"{EXCLUSIVE}:1"],
    ) as running:
        yield running


def variant(repository: Path, name: str, change: Callable[[dict[str, Any]], None]) -> dict:
    """The model's config.pbtxt as a dict, changed by ``change``, for ``load_model``."""
    config = config_to_dict(read_config(repository / name))
    change(config)
    return config


def timed(
    service_ms: int, batching: dict[str, Any] | None = None, **fields: Any
) -> Callable[[dict[str, Any]], None]:
    """A change of timed_work's config: its service time, dynamic_batching fields added, and
    top-level fields replaced."""

    def change(config: dict[str, Any]) -> None:
        config["parameters"]["service_ms"] = {"string_value": str(service_ms)}
        config["dynamic_batching"].update(batching or {})
        config.update(fields)

    return change


def send(url: str, model: str = "timed_work", **options: Any) -> dict[str, Any]:
    """One request to a timed_work model on its own client: latency, when it ran, or the error."""
    client = httpclient.InferenceServerClient(url)
    x = httpclient.InferInput("X", [1, 1], "FP32")
    x.set_data_from_numpy(np.ones((1, 1), np.float32))
    begin = time.perf_counter()
    try:
        result = client.infer(model, [x], **options)
    except InferenceServerException as error:
        return {
            "ok": False,
            "s": time.perf_counter() - begin,
            "status": error.status(),
            "error": str(error),
        }
    finally:
        client.close()
    return {
        "ok": True,
        "s": time.perf_counter() - begin,
        "start": int(result.as_numpy("START_NS")[0, 0]) / 1e9,
        "end": int(result.as_numpy("END_NS")[0, 0]) / 1e9,
        "pid": int(result.as_numpy("PID")[0, 0]),
    }


def burst(url: str, jobs: list[tuple[str, dict[str, Any]]], gap_s: float = 0.0) -> list[dict]:
    """Send every (model, options) job at once (``gap_s`` apart), each on its own thread."""
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = []
        for model, options in jobs:
            futures.append(pool.submit(send, url, model, **options))
            time.sleep(gap_s)
        return [future.result() for future in futures]


def test_rate_limit_arguments():
    assert rate_limit_arguments(False) == []
    assert rate_limit_arguments(True, ["cores:2", "mem:4:0"]) == [
        "--rate-limit=execution_count",
        "--rate-limit-resource=cores:2",
        "--rate-limit-resource=mem:4:0",
    ]
    with pytest.raises(ValueError, match="NAME:COUNT"):
        rate_limit_arguments(True, ["cores"])
    with pytest.raises(ValueError, match="rate_limit=True"):
        rate_limit_arguments(False, ["cores:2"])


def test_rate_limited_models_never_run_at_once_beyond_the_resource(server, repository):
    limited = {"resources": [{"name": EXCLUSIVE, "global": True, "count": 1}]}
    group = [{"count": 1, "kind": "KIND_CPU", "rate_limiter": limited}]
    for name in ("timed_work", "timed_work_b"):
        server.load_model(name, config=variant(repository, name, timed(250, instance_group=group)))
    runs = burst(server.http_url, [("timed_work", {}), ("timed_work_b", {})] * 2)
    assert all(run["ok"] for run in runs), runs
    spans = sorted((run["start"], run["end"]) for run in runs)
    for (_, first_end), (second_start, _) in zip(spans, spans[1:]):
        assert second_start >= first_end - 0.005, f"two executions overlapped: {spans}"
    # The same two models without the resource run side by side.
    for name in ("timed_work", "timed_work_b"):
        server.load_model(name, config=variant(repository, name, timed(250)))
    a, b = burst(server.http_url, [("timed_work", {}), ("timed_work_b", {})])
    assert a["ok"] and b["ok"]
    assert min(a["end"], b["end"]) - max(a["start"], b["start"]) > 0.1, (a, b)


def test_priority_requests_overtake_a_flood(server, repository):
    """A priority-1 request sent after a flood of priority-2 ones is answered first."""
    batching = {"priority_levels": 2, "default_priority_level": 2}
    server.load_model(
        "timed_work",
        config=variant(repository, "timed_work", timed(150, batching=batching)),
    )
    url = server.http_url
    with ThreadPoolExecutor(8) as pool:
        flood = [pool.submit(send, url, priority=2) for _ in range(6)]
        time.sleep(0.3)  # the flood is queued behind the first execution
        urgent = send(url, priority=1)
        low = [future.result() for future in flood]
    assert urgent["ok"] and all(run["ok"] for run in low)
    overtaken = [run for run in low if run["start"] > urgent["start"]]
    assert len(overtaken) >= 3, (urgent, low)  # it jumped the queue
    assert urgent["s"] < max(run["s"] for run in low)


def test_queue_policy_sheds_the_excess_fast_and_keeps_admitted_latency(server, repository):
    batching = {"default_queue_policy": {"max_queue_size": 2}}
    server.load_model(
        "timed_work",
        config=variant(repository, "timed_work", timed(200, batching=batching)),
    )
    runs = burst(server.http_url, [("timed_work", {})] * 10, gap_s=0.01)
    admitted = [run for run in runs if run["ok"]]
    shed = [run for run in runs if not run["ok"]]
    assert len(shed) >= 4 and len(admitted) >= 2, runs
    assert all(run["status"] == "503" for run in shed), shed
    assert all("Exceeds maximum queue size" in run["error"] for run in shed)
    assert max(run["s"] for run in shed) < 0.15  # rejected at once, not after waiting
    # The queue is bounded: the admitted are the one executing, the 2 queued and the few that
    # arrived as places freed; each waited for at most those (plus slack for a busy machine).
    assert len(admitted) <= 5, runs
    assert max(run["s"] for run in admitted) < 0.2 * len(admitted) + 1.2


def test_queue_timeout_rejects_what_waited_too_long(server, repository):
    batching = {
        "default_queue_policy": {
            "default_timeout_microseconds": 300_000,
            "timeout_action": "REJECT",
        }
    }
    server.load_model(
        "timed_work",
        config=variant(repository, "timed_work", timed(250, batching=batching)),
    )
    runs = burst(server.http_url, [("timed_work", {})] * 5, gap_s=0.01)
    admitted = [run for run in runs if run["ok"]]
    rejected = [run for run in runs if not run["ok"]]
    assert admitted and len(rejected) >= 2, runs
    assert len(admitted) + len(rejected) == 5


def test_cache_hits_skip_the_model(server, repository):
    server.load_model(
        "timed_work",
        config=variant(repository, "timed_work", timed(300, response_cache={"enable": True})),
    )
    miss = send(server.http_url)
    hit = send(server.http_url)
    assert miss["ok"] and hit["ok"]
    assert hit["start"] == miss["start"]  # the same stored answer: the model did not run again
    assert miss["s"] > 0.25 and hit["s"] < 0.2
    # Triton counts a request just after it answers it: wait for both to be counted.
    stats = settled_stats(server.http_client(), "timed_work", 2)
    assert (stats.cache_hit_count, stats.execution_count) == (1, 1)  # the model ran once


def test_the_cache_refuses_a_sequence_batched_model(server, repository):
    config = variant(
        repository, "running_mean", lambda c: c.update(response_cache={"enable": True})
    )
    with pytest.raises(ModelLoadError, match="(?i)cache"):
        server.load_model("running_mean", config=config)


def mean_of(client, sequence_id: int, value: float, start=False, end=False) -> tuple[float, int]:
    """Send one value of a sequence to running_mean: (MEAN, COUNT)."""
    data = httpclient.InferInput("VALUE", [1, 1], "FP32")
    data.set_data_from_numpy(np.array([[value]], np.float32))
    result = client.infer(
        "running_mean", [data], sequence_id=sequence_id, sequence_start=start, sequence_end=end
    )
    return float(result.as_numpy("MEAN")[0, 0]), int(result.as_numpy("COUNT")[0, 0])


def test_interleaved_sequences_keep_separate_state(server):
    server.load_model("running_mean")
    values = {101: [1.0, 2.0, 3.0, 4.0], 202: [10.0, 20.0, 30.0, 40.0], 303: [5.0, 5.0, 5.0, 8.0]}
    seen: dict[int, list[tuple[float, int]]] = {}

    def client_of(sequence_id: int) -> None:
        client = httpclient.InferenceServerClient(server.http_url)
        sent = values[sequence_id]
        seen[sequence_id] = [
            mean_of(client, sequence_id, v, start=i == 0, end=i == len(sent) - 1)
            for i, v in enumerate(sent)
        ]
        client.close()

    threads = [threading.Thread(target=client_of, args=(s,)) for s in values]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for sequence_id, sent in values.items():
        expected = [(float(np.mean(sent[: i + 1])), i + 1) for i in range(len(sent))]
        assert seen[sequence_id] == expected, sequence_id  # exact: these means are exact in FP32
    client = server.http_client()
    assert mean_of(client, 101, 7.0, start=True) == (7.0, 1)  # a new sequence starts afresh
    with pytest.raises(InferenceServerException, match="correlation ID") as error:
        mean_of(client, 0, 1.0)
    assert error.value.status() == "400"


def calibrate(client, **options: Any) -> str:
    """One request to score_calibrator: the version that answered."""
    score = httpclient.InferInput("SCORE", [1, 1], "FP32")
    score.set_data_from_numpy(np.array([[2.0]], np.float32))
    return client.infer("score_calibrator", [score], **options).as_numpy("VERSION")[0, 0].decode()


def test_a_version_switch_under_load_loses_no_request(server, repository):
    def policy(versions: list[int]) -> dict:
        return variant(
            repository,
            "score_calibrator",
            lambda c: c.update(version_policy={"specific": {"versions": versions}}),
        )

    server.load_model("score_calibrator", config=policy([1]))
    client = server.http_client()
    assert calibrate(client) == "1"
    with pytest.raises(InferenceServerException) as missing:
        calibrate(client, model_version="2")
    assert missing.value.status() == "404"
    answers: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def steady_client() -> None:
        own = httpclient.InferenceServerClient(server.http_url)
        while not stop.is_set():
            try:
                answers.append(calibrate(own))
            except InferenceServerException as error:
                failures.append(str(error))
        own.close()

    thread = threading.Thread(target=steady_client)
    thread.start()
    try:
        time.sleep(0.3)
        server.load_model("score_calibrator", config=policy([1, 2]))
        assert calibrate(client, model_version="1") == "1"  # pinned clients keep version 1
        time.sleep(0.3)
        server.load_model("score_calibrator", config=policy([2]))
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert failures == []
    assert answers[0] == "1" and answers[-1] == "2" and len(answers) > 20
    assert server.model_ready("score_calibrator", "2")
    assert not server.model_ready("score_calibrator", "1")
