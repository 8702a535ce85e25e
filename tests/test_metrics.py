"""helpers.metrics: parsing Prometheus text, and counters of a real server growing by the requests."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.clients import infer, infer_concurrently
from helpers.metrics import (
    KEY_METRICS,
    metrics_delta,
    model_metrics,
    parse_metrics,
    per_request_us,
    scrape,
    wait_for_model_metrics,
)
from helpers.server import TritonServer
from helpers.statistics import StatisticsWarning
from tests.tiny_models import sample_batch

PAGE = """\
# HELP nv_inference_request_success Number of successful inference requests, all batch sizes
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="m",version="1"} 3
nv_inference_request_success{model="m",version="2"} 2
nv_inference_request_success{model="other",version="1"} 7
# HELP nv_inference_request_failure Number of failed inference requests, all batch sizes
# TYPE nv_inference_request_failure counter
nv_inference_request_failure{model="m",reason="REJECTED",version="1"} 1
nv_inference_request_failure{model="m",reason="BACKEND",version="1"} 2
# HELP nv_inference_queue_duration_us Cumulative inference queuing duration in microseconds
# TYPE nv_inference_queue_duration_us counter
nv_inference_queue_duration_us{model="m",version="1"} 1500
# HELP nv_cpu_utilization CPU utilization rate [0.0 - 1.0]
# TYPE nv_cpu_utilization gauge
nv_cpu_utilization 0.25
"""


def test_parse_keeps_triton_names_and_splits_labels():
    frame = parse_metrics(PAGE)
    assert set(frame["metric"]) == {
        "nv_inference_request_success",
        "nv_inference_request_failure",
        "nv_inference_queue_duration_us",
        "nv_cpu_utilization",
    }
    success = frame[(frame["metric"] == "nv_inference_request_success") & (frame["model"] == "m")]
    assert sorted(success["version"]) == ["1", "2"]
    assert success["type"].unique().tolist() == ["counter"]
    failures = frame[frame["metric"] == "nv_inference_request_failure"]
    assert sorted(label["reason"] for label in failures["labels"]) == ["BACKEND", "REJECTED"]
    cpu = frame[frame["metric"] == "nv_cpu_utilization"].iloc[0]
    assert (cpu["model"], cpu["type"], cpu["value"]) == ("", "gauge", 0.25)


def test_model_metrics_sums_versions_and_labels_and_fills_zeros():
    counters = model_metrics(PAGE, "m")
    assert list(counters.index) == list(KEY_METRICS)
    assert counters["nv_inference_request_success"] == 5
    assert counters["nv_inference_request_failure"] == 3
    assert counters["nv_inference_queue_duration_us"] == 1500
    assert counters["nv_inference_exec_count"] == 0  # not on the page
    assert model_metrics(parse_metrics(PAGE), "other")["nv_inference_request_success"] == 7


def test_delta_and_per_request_split():
    before = model_metrics(PAGE, "m")
    after = before.copy()
    after["nv_inference_request_success"] += 4
    after["nv_inference_queue_duration_us"] += 2000
    after["nv_inference_compute_infer_duration_us"] += 8000
    delta = metrics_delta(before, after)
    assert delta.loc["nv_inference_request_success", "increase"] == 4
    assert delta.loc["nv_inference_count", "increase"] == 0
    assert delta.loc["nv_inference_queue_duration_us", "what it counts"]
    split = per_request_us(delta)
    assert split["queue"] == 500 and split["compute infer"] == 2000


@pytest.fixture(scope="module")
def server(tiny_repository: Path):
    with TritonServer(tiny_repository, models=["tiny_onnx"]) as running:
        yield running


def test_counters_increase_by_the_requests_sent(server):
    before = model_metrics(scrape(server.metrics_url), "tiny_onnx")
    requests = [{"images": sample_batch(1, seed=i)} for i in range(9)]
    infer_concurrently(server, "tiny_onnx", requests, concurrency=3)
    infer(server, "tiny_onnx", {"images": sample_batch(2)})  # one request, two images
    success = before["nv_inference_request_success"] + 10
    after = wait_for_model_metrics(server.metrics_url, "tiny_onnx", success, timeout=10)
    delta = metrics_delta(before, after)
    assert delta.loc["nv_inference_request_success", "increase"] == 10
    assert delta.loc["nv_inference_count", "increase"] == 11
    assert 1 <= delta.loc["nv_inference_exec_count", "increase"] <= 10
    assert delta.loc["nv_inference_request_failure", "increase"] == 0
    assert delta.loc["nv_inference_compute_infer_duration_us", "increase"] > 0


def test_waiting_for_counters_gives_up_after_the_timeout(server):
    now = model_metrics(scrape(server.metrics_url), "tiny_onnx")
    target = now["nv_inference_request_success"] + 1000
    with pytest.warns(StatisticsWarning, match="tiny_onnx's metrics"):
        counters = wait_for_model_metrics(server.metrics_url, "tiny_onnx", target, timeout=0.3)
    assert counters["nv_inference_request_success"] < target
