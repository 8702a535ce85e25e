"""helpers.perf_analyzer: the CSV parser on real exports, the command builder, the locator."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from helpers import perf_analyzer as pa

DATA = Path(__file__).parent / "data" / "perf_analyzer"


def test_result_columns_are_the_course_schema():
    assert pa.RESULT_COLUMNS == (
        "concurrency",
        "throughput_infer_per_s",
        "latency_avg_ms",
        "latency_p50_ms",
        "latency_p90_ms",
        "latency_p95_ms",
        "latency_p99_ms",
        "client_send_ms",
        "network_server_send_recv_ms",
        "server_queue_ms",
        "server_compute_input_ms",
        "server_compute_infer_ms",
        "server_compute_output_ms",
        "client_recv_ms",
        "tool",
    )


def test_parse_real_export_with_dynamic_batching_c32():
    frame = pa.parse_csv(DATA / "yolo_dyn_c32.csv")
    assert list(frame.columns) == list(pa.RESULT_COLUMNS)
    assert len(frame) == 1
    row = frame.iloc[0]
    assert row["concurrency"] == 32
    assert row["throughput_infer_per_s"] == pytest.approx(171.765)
    # microseconds in the CSV -> milliseconds in the schema
    assert row["latency_p50_ms"] == pytest.approx(185.117)
    assert row["latency_p90_ms"] == pytest.approx(208.182)
    assert row["latency_p95_ms"] == pytest.approx(210.897)
    assert row["latency_p99_ms"] == pytest.approx(215.462)
    assert row["server_queue_ms"] == pytest.approx(40.295)
    assert row["server_compute_input_ms"] == pytest.approx(17.736)
    assert row["server_compute_infer_ms"] == pytest.approx(126.919)
    assert row["server_compute_output_ms"] == pytest.approx(0.992)
    assert row["client_send_ms"] == pytest.approx(0.006)
    assert row["network_server_send_recv_ms"] == pytest.approx(0.164)
    assert row["client_recv_ms"] == pytest.approx(0.001)
    # no "Avg latency" column: the average is the sum of the components
    assert row["latency_avg_ms"] == pytest.approx(
        (6 + 164 + 40295 + 17736 + 126919 + 992 + 1) / 1000
    )
    assert row["tool"] == "perf_analyzer"


@pytest.mark.parametrize(
    ("name", "concurrency", "throughput", "p99_ms", "queue_ms"),
    [
        ("yolo_nobatch_c1.csv", 1, 72.385, 22.139, 0.053),
        ("yolo_nobatch_c32.csv", 32, 106.541, 394.788, 286.001),
        ("yolo_dyn_c8.csv", 8, 173.235, 58.833, 22.494),
        ("yolo_dyn_c32.csv", 32, 171.765, 215.462, 40.295),
    ],
)
def test_parse_every_committed_export(name, concurrency, throughput, p99_ms, queue_ms):
    row = pa.parse_csv(DATA / name).iloc[0]
    assert row["concurrency"] == concurrency
    assert row["throughput_infer_per_s"] == pytest.approx(throughput)
    assert row["latency_p99_ms"] == pytest.approx(p99_ms)
    assert row["server_queue_ms"] == pytest.approx(queue_ms)
    assert row["latency_p50_ms"] <= row["latency_p90_ms"] <= row["latency_p99_ms"]


def test_batching_beats_no_batching_in_the_real_exports():
    """What notebook 05 teaches, read off the real files: same concurrency, more throughput."""
    batched = pa.parse_csv(DATA / "yolo_dyn_c32.csv").iloc[0]
    unbatched = pa.parse_csv(DATA / "yolo_nobatch_c32.csv").iloc[0]
    assert batched["throughput_infer_per_s"] / unbatched["throughput_infer_per_s"] > 1.5
    assert batched["latency_p99_ms"] < unbatched["latency_p99_ms"]


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "export.csv"
    path.write_text(text)
    return path


def test_parse_several_rows_sorted_by_concurrency(tmp_path):
    header = (DATA / "yolo_dyn_c8.csv").read_text().splitlines()[0]
    rows = [
        (DATA / name).read_text().splitlines()[1]
        for name in ("yolo_dyn_c32.csv", "yolo_dyn_c8.csv")
    ]
    frame = pa.parse_csv(_csv(tmp_path, "\n".join([header, *rows]) + "\n"))
    assert frame["concurrency"].tolist() == [8, 32]
    assert frame["throughput_infer_per_s"].tolist() == pytest.approx([173.235, 171.765])


def test_parse_uses_avg_latency_column_when_present(tmp_path):
    text = (
        "Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,"
        "Server Compute Input,Server Compute Infer,Server Compute Output,Client Recv,"
        "p50 latency,p90 latency,p95 latency,p99 latency,Avg latency\n"
        "2,10.5,1,2,3,4,5,6,7,100,200,300,400,12345\n"
    )
    row = pa.parse_csv(_csv(tmp_path, text)).iloc[0]
    assert row["latency_avg_ms"] == pytest.approx(12.345)
    assert row["latency_p99_ms"] == pytest.approx(0.4)


def test_parse_rejects_request_rate_and_incomplete_csvs(tmp_path):
    with pytest.raises(ValueError, match="Concurrency"):
        pa.parse_csv(_csv(tmp_path, "Request Rate,Inferences/Second\n10,9.9\n"))
    with pytest.raises(ValueError, match="lacks columns"):
        pa.parse_csv(_csv(tmp_path, "Concurrency,Inferences/Second\n1,9.9\n"))


def test_build_command_full():
    command = pa.build_command(
        "yolo11n_onnx",
        url="127.0.0.1:8001",
        protocol="grpc",
        concurrency=8,
        shape={"images": (3, 640, 640)},
        measurement_interval_ms=3000,
        shared_memory="system",
        output_shared_memory_size=30_000_000,
        csv_path="/tmp/out.csv",
        batch_size=2,
        extra=["-s", "25", "--max-trials", "4"],
    )
    assert command == [
        "perf_analyzer",
        "-m",
        "yolo11n_onnx",
        "-u",
        "127.0.0.1:8001",
        "-i",
        "grpc",
        "--concurrency-range=8:8",
        "-b",
        "2",
        "--shape=images:3,640,640",
        "--measurement-interval",
        "3000",
        "--shared-memory=system",
        "--output-shared-memory-size=30000000",
        "-f",
        "/tmp/out.csv",
        "-s",
        "25",
        "--max-trials",
        "4",
    ]
    assert all(isinstance(part, str) for part in command)


def test_build_command_minimal_with_a_prefix():
    command = pa.build_command(
        "m", protocol="http", url="localhost:8000", concurrency=4, prefix=("docker", "run")
    )
    assert command == [
        "docker",
        "run",
        "-m",
        "m",
        "-u",
        "localhost:8000",
        "-i",
        "http",
        "--concurrency-range=4:4",
    ]
    # shared memory size is only passed with shared memory on
    no_shm = pa.build_command("m", output_shared_memory_size=10)
    assert not any("shared-memory" in part for part in no_shm)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"protocol": "tcp"},
        {"shared_memory": "gpu"},
        {"concurrency": 0},
        {"batch_size": 0},
    ],
)
def test_build_command_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        pa.build_command("m", **kwargs)


def test_build_command_rejects_option_like_model_name():
    with pytest.raises(ValueError):
        pa.build_command("--help")


def test_docker_command_mounts_results_and_uses_host_network(tmp_path):
    prefix = pa.docker_command(results_dir=tmp_path)
    assert prefix[:3] == ("docker", "run", "--rm")
    assert "--net=host" in prefix and "--ipc=host" in prefix
    assert f"{tmp_path}:{tmp_path}" in prefix
    assert "nvcr.io/nvidia/tritonserver:24.10-py3-sdk" in prefix
    assert prefix[-1] == "perf_analyzer"


def test_glibc_version_reads_confstr():
    version = pa.glibc_version()
    if os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"):
        assert version is not None and version >= (2, 17)


def _fake_binary(folder: Path, body: str) -> Path:
    path = folder / "perf_analyzer"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_find_uses_a_runnable_binary_on_path(tmp_path, monkeypatch):
    _fake_binary(tmp_path, 'echo "Usage: perf_analyzer [options]"; exit 1')
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    location = pa.find_perf_analyzer(use_docker=False)
    assert location.available and location.source == "path"
    assert location.command == (str(tmp_path / "perf_analyzer"),)


def test_find_reports_a_binary_the_loader_rejects(tmp_path, monkeypatch):
    _fake_binary(
        tmp_path,
        "echo 'perf_analyzer: /lib/x86_64-linux-gnu/libc.so.6: version GLIBC_2.38 not found"
        " (required by perf_analyzer)' >&2; exit 1",
    )
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(pa, "glibc_version", lambda: (2, 36))
    location = pa.find_perf_analyzer(use_docker=False)
    assert not location.available
    assert "GLIBC_2.38" in location.reason
    assert "glibc >= 2.38" in location.reason and "2.36" in location.reason


def test_find_explains_the_placeholder_wheel(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing there
    monkeypatch.setattr(pa, "_wheel_version", lambda: "0.1.0")
    monkeypatch.setattr(pa, "glibc_version", lambda: (2, 36))
    location = pa.find_perf_analyzer(use_docker=False)
    assert not location.available and location.command == ()
    assert "0.1.0 is the placeholder" in location.reason


def test_find_falls_back_to_docker_when_an_engine_answers(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(pa, "docker_engine_available", lambda: (True, "Docker engine 28"))
    location = pa.find_perf_analyzer()
    assert location.available and location.source == "docker"
    assert "nvcr.io/nvidia/tritonserver:24.10-py3-sdk" in location.command


def test_run_sweeps_levels_and_concatenates(tmp_path):
    """A stand-in perf_analyzer that writes the committed CSV for the level it is asked for."""
    script = _fake_binary(
        tmp_path,
        f"""
level=""; out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --concurrency-range=*) level="${{1#--concurrency-range=}}"; level="${{level%%:*}}";;
    -f) shift; out="$1";;
  esac
  shift
done
cp "{DATA}/yolo_dyn_c$level.csv" "$out"
""",
    )
    location = pa.PerfAnalyzerLocation(True, (str(script),), "test stand-in", "path")
    frame = pa.run(
        "yolo11n_onnx",
        concurrency_levels=[8, 32],
        shape={"images": (3, 640, 640)},
        location=location,
        results_dir=tmp_path / "results",
        progress=False,
    )
    assert list(frame.columns) == list(pa.RESULT_COLUMNS)
    assert frame["concurrency"].tolist() == [8, 32]
    assert frame["throughput_infer_per_s"].tolist() == pytest.approx([173.235, 171.765])
    assert (tmp_path / "results" / "yolo11n_onnx_c32.csv").exists()


def test_run_raises_with_the_stderr_tail(tmp_path):
    script = _fake_binary(
        tmp_path, 'echo "error: failed to get model metadata: not found" >&2; exit 99'
    )
    location = pa.PerfAnalyzerLocation(True, (str(script),), "test stand-in", "path")
    with pytest.raises(pa.PerfAnalyzerError, match="exit 99") as error:
        pa.run("missing", [1], location=location, results_dir=tmp_path, progress=False)
    assert "failed to get model metadata" in str(error.value)


def test_run_refuses_when_not_available():
    location = pa.PerfAnalyzerLocation(False, (), "no binary, no docker", "none")
    with pytest.raises(pa.PerfAnalyzerError, match="no binary, no docker"):
        pa.run("m", [1], location=location, progress=False)


def _unstable_binary(tmp_path, stable_from_ms: int):
    """A stand-in perf_analyzer: unstable (exit 0, no CSV, as on the GPU machine) for windows
    shorter than ``stable_from_ms``, else the committed c8 CSV. Logs each window it was given."""
    return _fake_binary(
        tmp_path,
        f"""
window=0; out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --measurement-interval) shift; window="$1";;
    -f) shift; out="$1";;
  esac
  shift
done
echo "$window" >> "{tmp_path}/windows.log"
if [ "$window" -lt {stable_from_ms} ]; then
  echo "Failed to obtain stable measurement within 3 measurement windows for concurrency 2. \
Please try to increase the --measurement-interval."
  exit 0
fi
cp "{DATA}/yolo_dyn_c8.csv" "$out"
""",
    )


def test_run_retries_an_unstable_level_with_longer_windows(tmp_path):
    location = pa.PerfAnalyzerLocation(True, (str(_unstable_binary(tmp_path, 4000)),), "", "path")
    frame = pa.run(
        "m", [2], measurement_interval_ms=2000, location=location, results_dir=tmp_path,
        progress=False,
    )  # fmt: skip
    assert (tmp_path / "windows.log").read_text().split() == ["2000", "4000"]
    assert frame["tool"].tolist() == ["perf_analyzer"]
    assert frame["throughput_infer_per_s"].tolist() == pytest.approx([173.235])


def test_run_reports_a_level_unstable_twice_without_raising(tmp_path, capsys):
    location = pa.PerfAnalyzerLocation(True, (str(_unstable_binary(tmp_path, 10**9)),), "", "path")
    frame = pa.run("m", [2], location=location, results_dir=tmp_path, progress=False)
    assert (tmp_path / "windows.log").read_text().split() == ["0", "10000"]  # default 5000 x 2
    assert list(frame.columns) == list(pa.RESULT_COLUMNS)
    assert frame["concurrency"].tolist() == [2]
    assert frame["tool"].tolist() == [pa.UNSTABLE_TOOL]
    assert frame["throughput_infer_per_s"].isna().all()
    assert (
        "no stable measurement for m at concurrency 2, also with 10000 ms"
        in capsys.readouterr().err
    )
