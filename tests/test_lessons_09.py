"""Notebook 09's copyable cells (many models, one server) where ``helpers`` cannot be imported.

Against a real embedded Triton with the rate limiter and a response cache, serving YOLO11n
(ONNX), Whisper tiny.en and the committed ``timed_work``, ``score_calibrator`` and
``running_mean`` from a temporary repository; the test provides the server's URLs and the
input files, and shrinks the priority and overload runs through the parameters.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers.model_config import config_from_dict, parse_config, read_config
from helpers.paths import MODEL_REPOSITORY, REPO_ROOT
from helpers.server import TritonServer
from helpers.yolo import sample_image_path
from tests.copyable import fenced_blocks, run_copyable, tagged_cells
from tests.reliability_models import add_model, yolo11n_files

NOTEBOOK = REPO_ROOT / "notebooks" / "09_many_models_one_server.ipynb"
PYTHON_MODELS = ["faster_whisper_python", "timed_work", "score_calibrator", "running_mean"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, no_leftover_server_processes):
    root = tmp_path_factory.mktemp("scheduling_lesson_repository")
    add_model(root, "yolo11n_onnx", "yolo11n_onnx", yolo11n_files(tmp_path_factory)["onnx"])
    for name in PYTHON_MODELS:
        shutil.copytree(
            MODEL_REPOSITORY / name, root / name, ignore=shutil.ignore_patterns("__pycache__")
        )
    with TritonServer(
        root,
        models=["yolo11n_onnx", "faster_whisper_python"],
        rate_limit=True,
        rate_limit_resources=[f"cpu_cores:{os.cpu_count()}"],
        cache_size=16 << 20,
    ) as running:
        yield running


def test_copyable_cells_schedule_two_models_and_the_small_ones(server, tmp_path: Path):
    result = run_copyable(
        NOTEBOOK,
        tmp_path,
        provided={
            "TRITON_HTTP_URL": server.http_url,
            "TRITON_METRICS_URL": server.metrics_url,
            "IMAGE_FILE": str(sample_image_path("bus.jpg")),
            "AUDIO_FILE": str(REPO_ROOT / "data" / "speech" / "meeting_start.wav"),
            "URGENT_REQUESTS": 8,
            "OVERLOAD_S": 2.0,
        },
        names=[
            "first_text", "first_come", "prioritised", "outcomes", "retried", "cache_ms",
            "texts", "before", "after", "pinned_to_missing", "answers", "failures", "both",
            "running_means", "missing_id",
        ],
    )  # fmt: skip
    values, shown = result["values"], result["shown"]
    assert "meeting" in values["first_text"].lower()
    limiter = next(s for s in shown if isinstance(s, dict) and "yolo11n_onnx" in s)
    for model in ("yolo11n_onnx", "faster_whisper_python"):
        (resource,) = limiter[model]["resources"]
        assert resource == {"name": "cpu_cores", "global": True, "count": os.cpu_count()}
    per_core = next(s for s in shown if isinstance(s, dict) and "instance_group" in s)
    (group,) = per_core["instance_group"]
    assert group["count"] == os.cpu_count() and group["rate_limiter"]["resources"][0]["count"] == 1
    assert per_core["parameters"]["intra_op_thread_count"] == {"string_value": "1"}
    # Priorities: the urgent stream overtakes the flood (its median about 4x lower here; a
    # rare ~500 ms wait in Triton's queue may reach the p99 of a few requests either way).
    first_come, prioritised = values["first_come"], values["prioritised"]
    assert np.median(first_come) > 2.5 * np.median(prioritised), (first_come, prioritised)
    assert np.percentile(prioritised, 99) <= np.percentile(first_come, 99) * 1.2
    # Load shedding: nothing refused without a policy, a large share refused fast with one,
    # and the answered requests wait less than in the unbounded queue.
    free, policed = values["outcomes"]["no queue policy"], values["outcomes"]["queue policy"]
    assert free["answered"] == free["requests"] and free["503, queue full"] == 0
    assert policed["503, queue full"] + policed["503, waited too long"] >= policed["requests"] / 4
    assert policed["503, queue full: p99 (ms)"] < 300
    assert policed["answered p99 (ms)"] < free["answered p99 (ms)"]
    # Backing off on 503: every request of a burst beyond the queue is answered in the end.
    assert len(values["retried"]) == 8 and max(values["retried"]) > 1
    # The response cache: one miss, then hits that skip Whisper.
    misses, hits = values["cache_ms"]["first (miss)"], values["cache_ms"]["second (hit)"]
    assert hits < misses / 5 and len(set(values["texts"])) == 1
    change = {k: values["after"][k] - values["before"].get(k, 0.0) for k in values["after"]}
    assert change["nv_cache_num_hits"] == 2 and change["nv_cache_num_misses"] == 1
    statistics = next(s for s in shown if isinstance(s, dict) and "statistics API, this model" in s)
    assert statistics["statistics API, this model"] == {"cache_hit": 2, "cache_miss": 1}
    # Versions: pinned to a version not served is a 404; the rollout fails no request.
    assert values["pinned_to_missing"].startswith("404")
    assert values["failures"] == []
    assert values["answers"][0] == "1" and values["answers"][-1] == "2"
    assert values["both"]["default"][1] == "2" and values["both"]["pinned to 1"][1] == "1"
    # State: each interleaved sequence got its own running mean; no correlation ID is a 400.
    means = {int(k): v for k, v in values["running_means"].items()}
    assert means == {
        11: [1.0, 1.5, 2.0, 2.5],
        22: [10.0, 15.0, 20.0, 25.0],
        33: [5.0, 5.0, 5.0, 6.0],
    }
    assert values["missing_id"].startswith("400") and "correlation ID" in values["missing_id"]


def test_the_configs_shown_are_the_committed_file_and_the_overrides_the_cells_send():
    blocks = fenced_blocks(NOTEBOOK, "protobuf")
    (sequence,) = [b for b in blocks if b.startswith("sequence_batching {")]
    (priorities,) = [b for b in blocks if "priority_levels" in b]
    (queue_policy,) = [b for b in blocks if "default_queue_policy" in b]
    running_mean = MODEL_REPOSITORY / "running_mean"
    assert sequence in (running_mean / "config.pbtxt").read_text()
    assert parse_config(sequence).sequence_batching == read_config(running_mean).sequence_batching
    cells = "\n".join(tagged_cells(NOTEBOOK))
    assert "update(priority_levels=2, default_priority_level=2)" in cells
    assert parse_config(priorities) == config_from_dict(
        {"dynamic_batching": {"priority_levels": 2, "default_priority_level": 2}}
    )
    parameters: dict = {}
    exec(tagged_cells(NOTEBOOK, "parameters")[0], parameters)  # noqa: S102 - the notebook's own
    assert '"max_queue_size": MAX_QUEUE_SIZE' in cells and '"timeout_action": "REJECT"' in cells
    assert parse_config(queue_policy) == config_from_dict(
        {
            "dynamic_batching": {
                "default_queue_policy": {
                    "max_queue_size": parameters["MAX_QUEUE_SIZE"],
                    "default_timeout_microseconds": parameters["QUEUE_TIMEOUT_MS"] * 1000,
                    "timeout_action": "REJECT",
                }
            }
        }
    )
