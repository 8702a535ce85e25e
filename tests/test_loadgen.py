"""The course's load engine (helpers.loadgen) against a real embedded Triton.

One short sweep of the tiny ONNX model (max batch 8, 50 ms max queue delay): at concurrency 4
the batcher waits out its delay and runs 4 requests together, at 8 it fills whole batches.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from helpers.loadgen import (
    LATENCY_COLUMNS,
    PERCENTILE_METHOD,
    PERCENTILES,
    LoadError,
    Payload,
    Target,
    closed_loop_window,
    latency_columns,
    measure,
    percentiles,
    prepare,
    sweep,
    triton_target,
)
from helpers.server import TritonServer
from tests.tiny_models import sample_batch, tiny_net
from tools.bench.shm import output_byte_sizes, prepare_in_system_memory, shm_target

LEVELS = (4, 8)
SPLIT = (
    "server_queue_ms",
    "server_compute_input_ms",
    "server_compute_infer_ms",
    "server_compute_output_ms",
)


@dataclasses.dataclass
class Timeline:
    """When each answer of a watched target arrived, and when each statistics read ran."""

    answers: list[float] = dataclasses.field(default_factory=list)
    reads: list[tuple[float, float]] = dataclasses.field(default_factory=list)  # (start, end)

    def watch(self, target: Target) -> Target:
        """``target`` with its senders and its statistics reads timed here."""

        def new_sender():
            send = target.new_sender()

            def timed() -> None:
                send()
                self.answers.append(time.perf_counter())

            timed.close = getattr(send, "close", lambda: None)
            return timed

        def stats():
            start = time.perf_counter()
            snapshot = target.stats()
            self.reads.append((start, time.perf_counter()))
            return snapshot

        return dataclasses.replace(target, new_sender=new_sender, stats=stats)

    def assert_server_counted_the_answers(self, row: pd.Series | dict, measurement: int) -> None:
        """The server's success delta of a ``measure`` row against the answers the client saw.

        The server read its counters at some moment inside each statistics read (the
        ``measurement``-th pair of reads), so it counted at least the answers that came between
        the two reads and at most those that came from the start of the first to the end of
        the second. Each thread adds at most one answer at each end: one the client saw just
        before the server counted it, or one it noted late. Unlike a fixed bound, this holds
        however long a read takes on a busy machine.
        """
        (start_0, end_0), (start_1, end_1) = self.reads[2 * measurement : 2 * measurement + 2]
        inner = sum(end_0 <= at < start_1 for at in self.answers)
        outer = sum(start_0 <= at < end_1 for at in self.answers)
        slack = 2 * row["concurrency"]
        counted = row["server_success_delta"]
        assert inner - slack <= counted <= outer + slack, (
            f"server counted {counted}; between the reads the client saw {inner} answers, "
            f"across them {outer}, concurrency {row['concurrency']}"
        )


@pytest.fixture(scope="module")
def timeline() -> Timeline:
    return Timeline()


@pytest.fixture(scope="module")
def result(tiny_repository: Path, timeline: Timeline) -> pd.DataFrame:
    with TritonServer(tiny_repository, models=["tiny_onnx"]) as server:
        payload = Payload({"images": sample_batch(1)}, ["scores"])
        return sweep(
            [timeline.watch(triton_target(server.grpc_url, "tiny_onnx", payload))],
            LEVELS,
            warmup_s=0.5,
            window_s=2.0,
            max_windows=3,
            stop_on_error=True,
            progress=False,
        )


def test_one_row_per_level_named_after_the_model(result: pd.DataFrame):
    assert result["concurrency"].tolist() == list(LEVELS)
    assert (result["service"] == "tiny_onnx").all() and (result["errors"] == 0).all()


def test_throughput_times_window_matches_the_servers_success_count(
    result: pd.DataFrame, timeline: Timeline
):
    """The client counts the requests that ended inside the window, the server those it counted
    between its reads at the window's two ends; the answers the client saw bound the server's
    count (``Timeline.assert_server_counted_the_answers``)."""
    np.testing.assert_allclose(
        result["throughput_infer_per_s"] * result["window_s"], result["requests"]
    )
    assert (result["server_success_delta"] > 0).all()
    assert len(timeline.reads) == 2 * len(result)  # one read at each end of each measurement
    for measurement, row in result.iterrows():
        timeline.assert_server_counted_the_answers(row, measurement)


def test_latency_percentiles_are_ordered(result: pd.DataFrame):
    columns = ["latency_p50_ms", "latency_p90_ms", "latency_p95_ms", "latency_p99_ms"]
    latencies = result[columns].to_numpy()
    assert (latencies > 0).all()
    assert (np.diff(latencies, axis=1) >= 0).all(), result[columns]


def test_server_side_split_is_at_most_the_client_latency(result: pd.DataFrame):
    split = result[list(SPLIT)]
    assert (split >= 0).all().all()
    assert (split["server_compute_infer_ms"] > 0).all()
    assert (split.sum(axis=1) <= result["latency_avg_ms"]).all(), result[[*SPLIT, "latency_avg_ms"]]


@pytest.fixture(scope="module")
def tiny_server(tiny_repository: Path):
    with TritonServer(tiny_repository, models=["tiny_onnx"]) as server:
        yield server


def _loadgen_regions() -> list[str]:
    """This process's regions (``tools.bench.shm`` names them after the pid): another test run
    on the same machine has its own, which are not ours to count (seen in a tools.busy run)."""
    return sorted(p.name for p in Path("/dev/shm").glob(f"loadgen_{os.getpid()}_*"))


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_system_shared_memory_carries_real_inputs_and_outputs(tiny_server, protocol: str):
    """The request names regions; the server reads the input there and writes the output there."""
    import tritonclient.utils.shared_memory as shm

    batch = sample_batch(3, seed=7)
    url = tiny_server.grpc_url if protocol == "grpc" else tiny_server.http_url
    prepared, handles = prepare_in_system_memory(
        protocol, url, "tiny_onnx", Payload({"images": batch})
    )
    try:
        assert len(handles) == 2  # one input, one output
        output_handle = handles[1]
        fresh = shm.get_contents_as_numpy(output_handle, np.float32, [3, 4]).copy()
        prepared.send()
        served = shm.get_contents_as_numpy(output_handle, np.float32, [3, 4])
        assert not fresh.any()  # a new region is zeros: what is there now, the server wrote
        with torch.no_grad():
            expected = tiny_net()(torch.from_numpy(batch)).numpy()
        np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-5)
        assert len(_registered(tiny_server, protocol)) == 2
    finally:
        prepared.close()
    assert _registered(tiny_server, protocol) == []
    assert _loadgen_regions() == []


def _registered(server, protocol: str) -> list:
    """The system shared memory regions the server holds, asked over ``protocol``."""
    if protocol == "grpc":
        with grpcclient.InferenceServerClient(server.grpc_url) as client:
            return list(client.get_system_shared_memory_status().regions)
    with httpclient.InferenceServerClient(server.http_url) as client:
        return list(client.get_system_shared_memory_status())


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("memory", ["none", "system"])
def test_a_failing_request_stops_the_run_with_the_servers_reason(tiny_server, protocol, memory):
    url = tiny_server.grpc_url if protocol == "grpc" else tiny_server.http_url
    wrong = Payload({"images": sample_batch(1).astype(np.float64)})
    reason = "input 'images' data-type is 'FP64', but model 'tiny_onnx' expects 'FP32'"
    with pytest.raises(LoadError, match=r"request\(s\) failed; first: .*" + re.escape(reason)):
        target = shm_target(url, "tiny_onnx", wrong, memory, protocol)
        measure(target, 2, warmup_s=0.5, stop_on_error=True)
    assert _loadgen_regions() == []


def test_measure_over_shared_memory_counts_what_the_server_counts(tiny_server):
    payload = Payload({"images": sample_batch(1)}, ["scores"])
    timeline = Timeline()
    row = measure(
        timeline.watch(shm_target(tiny_server.grpc_url, "tiny_onnx", payload)),
        4,
        warmup_s=0.5,
        window_s=1.5,
        max_windows=3,
        stop_on_error=True,
    )
    assert row["server_success_delta"] > 0
    timeline.assert_server_counted_the_answers(row, 0)
    assert _loadgen_regions() == []  # every region is unregistered and unlinked afterwards


def test_shared_memory_mode_is_checked():
    with pytest.raises(ValueError, match=r"memory must be one of \('none', 'system'\)"):
        shm_target("127.0.0.1:1", "m", Payload({"x": np.zeros((1, 1))}), "cuda")


def test_output_of_unknown_size_cannot_use_shared_memory():
    class Client:
        def get_model_metadata(self, model, as_json=False):
            return {"outputs": [{"name": "text", "datatype": "BYTES", "shape": ["-1", "1"]}]}

    with pytest.raises(ValueError, match="output 'text' of 'whisper'.*cannot go through shared"):
        output_byte_sizes(Client(), "grpc", "whisper", 1)


TEXT_MODEL = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            text = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
            lengths = np.array([[len(row[0])] for row in text], dtype=np.int32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("LENGTH", lengths)]))
        return responses
"""
TEXT_CONFIG = """
backend: "python"
max_batch_size: 4
input [ { name: "TEXT", data_type: TYPE_STRING, dims: [ 1 ] } ]
output [ { name: "LENGTH", data_type: TYPE_INT32, dims: [ 1 ] } ]
"""


@pytest.fixture(scope="module")
def text_server(tmp_path_factory: pytest.TempPathFactory):
    """A Python-backend model with a string input: the byte length of each text."""
    root = tmp_path_factory.mktemp("text_repository")
    (root / "text_length" / "1").mkdir(parents=True)
    (root / "text_length" / "1" / "model.py").write_text(TEXT_MODEL)
    (root / "text_length" / "config.pbtxt").write_text(TEXT_CONFIG)
    with TritonServer(root, models=["text_length"]) as server:
        yield server


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("memory", ["none", "system"])
def test_string_inputs_are_sent_as_triton_bytes_tensors(text_server, protocol, memory):
    url = text_server.grpc_url if protocol == "grpc" else text_server.http_url
    payload = Payload(
        {"TEXT": np.array([["héllo".encode()], [b"triton"]], dtype=object)}, ["LENGTH"]
    )
    if memory == "system":
        prepared, handles = prepare_in_system_memory(protocol, url, "text_length", payload)
    else:
        prepared, handles = prepare(protocol, url, "text_length", payload), []
    try:
        response = prepared.send()
        if memory == "system":
            import tritonclient.utils.shared_memory as shm

            lengths = shm.get_contents_as_numpy(handles[-1], np.int32, [2, 1])
        elif protocol == "grpc":
            lengths = np.frombuffer(response.raw_output_contents[0], dtype=np.int32)
        else:
            lengths = response.as_numpy("LENGTH")
        assert lengths.ravel().tolist() == [6, 6]  # "héllo" is 6 bytes in UTF-8
    finally:
        prepared.close()
    target = shm_target(url, "text_length", payload, memory, protocol)
    row = measure(target, 2, warmup_s=0.3, window_s=1, max_windows=3, stop_on_error=True)
    assert row["server_success_delta"] > 0


# ----------------------------------------------------------------- the engine, no server
def test_percentiles_are_numpys_linear_percentiles_on_known_data():
    values = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 1000.0]
    found = percentiles(values)
    assert PERCENTILE_METHOD == "linear"
    for point in PERCENTILES:
        assert found[point] == pytest.approx(np.percentile(values, point, method="linear"))
    # by hand: rank p/100 * (n - 1), interpolated between its two neighbours
    assert found[50] == pytest.approx(55.0)  # rank 4.5: halfway between 50 and 60
    assert found[90] == pytest.approx(181.0)  # rank 8.1: 90 + 0.1 * (1000 - 90)
    assert found[99] == pytest.approx(918.1)  # rank 8.91
    assert np.isnan(percentiles([])[99])


def test_latency_columns_name_the_mean_and_every_percentile():
    columns = latency_columns([1.0, 2.0, 3.0, 4.0])
    assert tuple(columns) == LATENCY_COLUMNS
    assert columns["latency_avg_ms"] == 2.5 and columns["latency_p50_ms"] == 2.5


def test_closed_loop_keeps_every_sender_busy_and_counts_what_they_return():
    """Each sender has one request in flight at a time and sends again once it is answered.

    Only what holds on any machine is asserted: a busy machine stretches each 10 ms request
    and the pauses between them, so the count has an upper bound (no request is shorter than
    its sleep) but no lower one (seen with every core busy: 52 requests, not about 100).
    """
    calls = [0, 0]

    def sender(index: int):
        def send() -> float:
            calls[index] += 1
            time.sleep(0.01)
            return index + 0.5  # tells the two senders' requests apart

        return send

    window = closed_loop_window(
        [sender(0), sender(1)], warmup_s=0.05, warmup_requests=2, window_s=0.5, max_windows=1
    )
    assert window.first_error is None and window.errors == []
    assert window.seconds >= 0.5
    assert all(window.begin <= end < window.end for _, end, _ in window.requests)
    assert (window.latencies_ms() >= 10).all()
    counts = []
    for index in (0, 1):
        mine = sorted((start, end) for start, end, value in window.requests if value == index + 0.5)
        assert mine, f"sender {index} sent nothing inside the window"
        # one request in flight per sender: the next starts once the previous has ended
        assert all(later[0] >= earlier[1] for earlier, later in zip(mine, mine[1:]))
        assert len(mine) <= window.seconds / 0.01 + 1
        assert calls[index] >= 2 + len(mine)  # the warm-up requests, then the window's
        counts.append(len(mine))
    assert window.total() == pytest.approx(0.5 * counts[0] + 1.5 * counts[1])


def test_a_window_shorter_than_one_request_is_stretched_until_one_finishes():
    """On a busy machine one request can outlast a short window (notebook 05's test parameters)."""

    def slow() -> float:
        time.sleep(0.4)
        return 1.0

    window = closed_loop_window([slow], warmup_s=0, window_s=0.05, max_windows=2)
    assert window.first_error is None
    assert len(window.requests) >= 2  # each window waited for its request instead of coming back empty
    assert window.seconds >= 0.4


def test_closed_loop_stops_at_the_first_error_or_counts_errors_and_goes_on():
    def failing() -> None:
        time.sleep(0.01)
        raise ValueError("no such model")

    stopped = closed_loop_window([failing], warmup_s=0, window_s=5)
    assert str(stopped.first_error) == "no such model" and stopped.seconds < 1
    counted = closed_loop_window([failing], warmup_s=0.1, window_s=0.5, stop_on_error=False)
    assert counted.requests == [] and len(counted.errors) >= 3  # one every 60 ms at most
    assert counted.failures > len(counted.errors)  # the warm-up's failures too
