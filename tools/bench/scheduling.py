"""Priorities beside a flood, and a version switch under load, on one server in one run.

``python -m tools.bench scheduling``: the embedded server (or Docker) serves the committed
``timed_work`` (a Python model that sleeps ``--service-ms`` per request, one request per
execution) and ``score_calibrator`` (versions 1 and 2). First, ``--flood`` clients send
priority-2 requests to ``timed_work`` as fast as they are answered while one client sends
``--urgent`` priority-1 requests one after another, twice: with the shipped config (no priority
levels: first come, first served) and with ``priority_levels: 2``. Then ``--switch-clients``
clients call ``score_calibrator`` continuously while its version policy goes from [1] to [1, 2]
to [2]; every failed request is counted. Headline: ``priority_p99_gain`` = p99 of the urgent
stream without / with priority levels, ``switch_failures`` = requests failed during the switch.
Introduced with notebook 09, which runs the same experiments step by step.
"""

from __future__ import annotations

import argparse
import copy
import threading
import time
from collections import Counter

import numpy as np

from helpers.lessons.priorities import urgent_latencies
from helpers.model_config import config_to_dict, read_config
from helpers.paths import MODEL_REPOSITORY
from helpers.server import ServerError, TritonServer
from tools.bench import CannotRun

TIMED, VERSIONED = "timed_work", "score_calibrator"


def switch_under_load(server: TritonServer, clients: int, pause_s: float) -> tuple[Counter, list]:
    """Versions [1] -> [1, 2] -> [2] of score_calibrator while clients call it (notebook 09)."""
    import tritonclient.http as httpclient

    base = config_to_dict(read_config(MODEL_REPOSITORY / VERSIONED))

    def serve(versions: list[int]) -> None:
        config = copy.deepcopy(base)
        config["version_policy"] = {"specific": {"versions": versions}}
        server.load_model(VERSIONED, config=config)

    serve([1])
    answers: Counter = Counter()
    failures: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def steady() -> None:
        own = httpclient.InferenceServerClient(server.http_url)
        score = httpclient.InferInput("SCORE", [1, 1], "FP32")
        score.set_data_from_numpy(np.array([[2.0]], np.float32))
        while not stop.is_set():
            try:
                version = own.infer(VERSIONED, [score]).as_numpy("VERSION")[0, 0].decode()
                with lock:
                    answers[version] += 1
            except Exception as error:  # noqa: BLE001 - every failure is counted
                with lock:
                    failures.append(repr(error))
        own.close()

    threads = [threading.Thread(target=steady, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(pause_s)
        serve([1, 2])
        time.sleep(pause_s)
        serve([2])
        time.sleep(pause_s)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    return answers, failures


def run(argv: list[str]) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m tools.bench scheduling")
    parser.add_argument("--service-ms", type=int, default=50, help="timed_work's work per request")
    parser.add_argument("--flood", type=int, default=8, help="low-priority clients")
    parser.add_argument("--urgent", type=int, default=40, help="high-priority requests per run")
    parser.add_argument("--switch-clients", type=int, default=4)
    parser.add_argument("--switch-pause", type=float, default=2.0, help="seconds between steps")
    args = parser.parse_args(argv)

    timed = config_to_dict(read_config(MODEL_REPOSITORY / TIMED))
    timed["parameters"]["service_ms"] = {"string_value": str(args.service_ms)}
    prioritised = copy.deepcopy(timed)
    prioritised["dynamic_batching"].update(priority_levels=2, default_priority_level=2)
    print(
        f"{TIMED}: {args.service_ms} ms per request, one request per execution, 1 instance; "
        f"{args.flood} priority-2 clients, {args.urgent} priority-1 requests one after another"
    )
    try:
        with TritonServer() as server:
            print(f"server: {server.mode} (Python backend models)")
            results = {}
            for name, config in (("no priority levels", timed), ("priority_levels 2", prioritised)):
                server.load_model(TIMED, config=config)
                latencies = urgent_latencies(server.http_url, args.flood, args.urgent)
                results[name] = latencies
                print(
                    f"  {name}: urgent p50 {np.percentile(latencies, 50):.0f} ms, "
                    f"p99 {np.percentile(latencies, 99):.0f} ms, "
                    f"max {max(latencies):.0f} ms"
                )
            answers, failures = switch_under_load(server, args.switch_clients, args.switch_pause)
    except ServerError as error:
        raise CannotRun(str(error)) from error
    print(
        f"{VERSIONED}: versions [1] -> [1, 2] -> [2], {args.switch_pause:.0f} s apart, "
        f"{args.switch_clients} clients: {sum(answers.values())} answered "
        f"({dict(sorted(answers.items()))} by version), {len(failures)} failed"
    )
    for failure in failures[:3]:
        print(f"  failure: {failure[:200]}")
    gain = np.percentile(results["no priority levels"], 99) / np.percentile(
        results["priority_levels 2"], 99
    )
    return {"priority_p99_gain": float(gain), "switch_failures": float(len(failures))}
