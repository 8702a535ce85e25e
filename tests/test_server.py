"""The server manager and the Python stand-in backends, against a real embedded Triton."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import psutil
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from helpers import machine
from helpers import server as server_module
from helpers.commands import format_command
from helpers.paths import REPO_ROOT
from helpers.processes import free_ports
from helpers.server import (
    CURRENT_NGC_TAG,
    OWNER_FILE,
    WORKDIR_PREFIX,
    ModelLoadError,
    Ports,
    ServerError,
    ServerUnavailable,
    TritonServer,
    docker_command,
    release_arguments,
    remove_orphaned_workdirs,
)
from helpers.statistics import model_stats, settled_stats
from tests.tiny_models import sample_batch, tiny_net

#: Served vs in-process outputs: same runtime, same inputs; only float summation order may differ.
ATOL = 1e-5


@pytest.fixture(scope="module")
def server(tiny_repository: Path):
    with TritonServer(tiny_repository, models=["tiny_onnx", "tiny_torchscript"]) as running:
        yield running


def http_infer(
    server: TritonServer,
    model: str,
    array: np.ndarray,
    name: str = "images",
    output: str = "scores",
    datatype: str = "FP32",
) -> np.ndarray:
    client = server.http_client()
    tensor = httpclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=True)
    return client.infer(model, [tensor]).as_numpy(output)


def grpc_infer(
    server: TritonServer,
    model: str,
    array: np.ndarray,
    name: str = "images",
    output: str = "scores",
) -> np.ndarray:
    client = server.grpc_client()
    tensor = grpcclient.InferInput(name, list(array.shape), "FP32")
    tensor.set_data_from_numpy(array)
    return client.infer(model, [tensor]).as_numpy(output)


# ----------------------------------------------------------------------------- correctness
def test_onnx_served_equals_onnxruntime_in_process(server, tiny_repository):
    batch = sample_batch(3, seed=1)
    session = ort.InferenceSession(str(tiny_repository / "tiny_onnx/1/model.onnx"))
    expected = session.run(None, {"images": batch})[0]
    for served in (http_infer(server, "tiny_onnx", batch), grpc_infer(server, "tiny_onnx", batch)):
        assert served.shape == (3, 4)
        np.testing.assert_allclose(served, expected, atol=ATOL)


def test_torchscript_served_equals_torch_in_process(server):
    batch = sample_batch(2, seed=2)
    with torch.no_grad():
        expected = tiny_net()(torch.from_numpy(batch)).numpy()
    for infer in (http_infer, grpc_infer):
        served = infer(server, "tiny_torchscript", batch, name="INPUT__0", output="OUTPUT__0")
        np.testing.assert_allclose(served, expected, atol=ATOL)


def test_minimal_config_is_completed_from_the_onnx_file(server):
    server.load_model("tiny_onnx_minimal")
    try:
        config = server.http_client().get_model_config("tiny_onnx_minimal")
        assert config["backend"] == "onnxruntime"
        assert config["max_batch_size"] == 4  # the native backend's default-max-batch-size
        assert "dynamic_batching" in config
        assert [(i["name"], i["data_type"], i["dims"]) for i in config["input"]] == [
            ("images", "TYPE_FP32", [3, -1, -1])
        ]
        assert [(o["name"], o["dims"]) for o in config["output"]] == [("scores", [4])]
        assert http_infer(server, "tiny_onnx_minimal", sample_batch(2)).shape == (2, 4)
    finally:
        server.unload_model("tiny_onnx_minimal")


def test_server_log_says_it_is_the_python_stand_in(server):
    said = server.log_tail(200, containing=["Python stand-in for Triton's 'onnxruntime'"], at_least=1)
    assert "tiny_onnx" in said


# ----------------------------------------------------------------------------- batching
def test_dynamic_batching_groups_concurrent_requests(server):
    client = server.http_client()
    before = model_stats(client, "tiny_onnx")
    inputs = [sample_batch(1, seed=i) for i in range(16)]
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda a: http_infer(server, "tiny_onnx", a), inputs))
    expected = ort.InferenceSession(
        str(Path(server.model_repository) / "tiny_onnx/1/model.onnx")
    ).run(None, {"images": np.concatenate(inputs)})[0]
    np.testing.assert_allclose(np.concatenate(results), expected, atol=ATOL)  # no mix-ups
    ran = settled_stats(client, "tiny_onnx", before.success_count + 16) - before
    assert ran.inference_count == 16
    assert ran.execution_count < ran.inference_count
    assert max(size for size, count in ran.batches.items() if count) > 1


# ----------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize(
    ("name", "array", "datatype", "expected"),
    [
        ("image", sample_batch(1), "FP32", "image"),  # wrong input name
        ("images", np.zeros((1, 4, 16, 16), np.float32), "FP32", "images"),  # wrong shape
        ("images", np.zeros((1, 3, 16, 16), np.float64), "FP64", "FP64"),  # wrong dtype
        ("images", np.zeros((9, 3, 16, 16), np.float32), "FP32", "batch"),  # above max_batch_size
    ],
    ids=["wrong-name", "wrong-shape", "wrong-dtype", "batch-too-big"],
)
def test_bad_input_gets_a_clear_error_and_the_server_keeps_serving(
    server, name, array, datatype, expected
):
    with pytest.raises(InferenceServerException) as error:
        http_infer(server, "tiny_onnx", array, name=name, datatype=datatype)
    assert expected in str(error.value)
    assert http_infer(server, "tiny_onnx", sample_batch(1)).shape == (1, 4)


def test_missing_input_is_named(server):
    client = server.http_client()
    with pytest.raises(InferenceServerException, match="images"):
        client.infer("tiny_onnx", [], outputs=[httpclient.InferRequestedOutput("scores")])


def test_a_failing_request_does_not_fail_the_rest_of_its_batch(server):
    # 1x1 images pass the config check (dims are -1) but fail the 3x3 conv inside onnxruntime.
    bad = sample_batch(1, size=1)
    good = [sample_batch(1, seed=i) for i in range(6)]

    def call(array: np.ndarray):
        try:
            return http_infer(server, "tiny_onnx", array)
        except InferenceServerException as error:
            return error

    with ThreadPoolExecutor(7) as pool:
        results = list(pool.map(call, [bad, *good]))
    assert isinstance(results[0], InferenceServerException)
    assert "onnxruntime failed on this request" in str(results[0])
    assert all(isinstance(r, np.ndarray) and r.shape == (1, 4) for r in results[1:])


# ----------------------------------------------------------------------------- load failures
@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("broken_config", "Couldn't parse integer: eight"),
        ("corrupt_onnx", "cannot read"),
        ("tiny_trt", "tensorrt_plan models need"),
    ],
)
def test_a_model_that_cannot_load_reports_why_and_the_others_keep_serving(server, model, expected):
    with pytest.raises(ModelLoadError) as error:
        server.load_model(model)
    assert model in str(error.value)
    assert expected in str(error.value)
    assert server.model_ready("tiny_onnx")
    assert http_infer(server, "tiny_onnx", sample_batch(1)).shape == (1, 4)


def test_repository_index_lists_models_and_states(server):
    states = {entry["name"]: entry.get("state") for entry in server.repository_index()}
    assert states["tiny_onnx"] == "READY"
    assert "broken_config" in states


def test_load_with_an_overriding_config_and_unload(server):
    config = {
        "platform": "onnxruntime_onnx",
        "max_batch_size": 2,
        "instance_group": [{"kind": "KIND_CPU", "count": 2}],
    }
    server.load_model("tiny_onnx_nobatch", config=json.dumps(config))
    loaded = server.http_client().get_model_config("tiny_onnx_nobatch")
    assert loaded["max_batch_size"] == 2 and loaded["instance_group"][0]["count"] == 2
    server.unload_model("tiny_onnx_nobatch")
    assert not server.model_ready("tiny_onnx_nobatch")


# ----------------------------------------------------------------------------- processes
def test_binds_to_loopback_only(server):
    ports = {server.ports.http, server.ports.grpc, server.ports.metrics}
    listening = [
        c
        for c in psutil.Process(server.pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    ]
    assert {c.laddr.port for c in listening} >= ports
    for address in {c.laddr.ip for c in listening if c.laddr.port in ports}:
        ip = ipaddress.ip_address(address)
        ip = getattr(ip, "ipv4_mapped", None) or ip  # gRPC reports ::ffff:127.0.0.1
        assert ip.is_loopback, f"listening on {address}"


def test_two_servers_run_side_by_side(server, tiny_repository):
    with TritonServer(tiny_repository, models=["tiny_onnx"]) as second:
        assert second.ports != server.ports
        assert http_infer(second, "tiny_onnx", sample_batch(1)).shape == (1, 4)
        assert http_infer(server, "tiny_onnx", sample_batch(1)).shape == (1, 4)
    assert http_infer(server, "tiny_onnx", sample_batch(1)).shape == (1, 4)


def test_ports_already_taken_give_a_clear_error(tiny_repository):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        others = free_ports(2)
        with pytest.raises(ServerError, match="tritonserver"):
            TritonServer(tiny_repository, ports=Ports(port, *others), startup_timeout=20).start()


def test_stop_is_clean_and_leaves_no_process(tiny_repository):
    running = TritonServer(tiny_repository, models=["tiny_onnx"]).start()
    pid = running.pid
    stubs = [p.pid for p in psutil.Process(pid).children(recursive=True)]
    assert stubs, "the Python backend runs each model instance in a stub process"
    assert running.stop() == 0  # clean exit after SIGTERM
    time.sleep(0.5)
    assert not any(
        psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in [pid, *stubs]
    )


def test_killing_the_parent_python_kills_the_server(tiny_repository):
    script = textwrap.dedent(
        f"""
        import os, sys, time, psutil
        from helpers.server import TritonServer
        server = TritonServer({str(tiny_repository)!r}, models=["tiny_onnx"]).start()
        children = [p.pid for p in psutil.Process(server.pid).children(recursive=True)]
        print(server._workdir, server.pid, *children, flush=True)
        time.sleep(120)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    workdir, *pids = parent.stdout.readline().split()
    pids = [int(p) for p in pids]
    assert len(pids) >= 2
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [
            p for p in alive if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"
        ]
        time.sleep(0.2)
    assert alive == [], f"processes left after the parent was killed: {alive}"
    # the killed parent could not remove the server's work folder; the next start does
    assert Path(workdir).is_dir()
    assert Path(workdir) in remove_orphaned_workdirs(Path(workdir).parent)
    assert not Path(workdir).exists()


def test_only_work_folders_whose_owner_and_processes_are_gone_are_removed(tmp_path):
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = gone.stdout.strip()
    folders = {
        name: tmp_path / f"{WORKDIR_PREFIX}{name}" for name in ("dead", "alive", "none", "used")
    }
    for name, folder in folders.items():
        (folder / "backends").mkdir(parents=True)
        if name != "none":
            (folder / OWNER_FILE).write_text(str(os.getpid()) if name == "alive" else dead_pid)
    other = tmp_path / "someone-elses"
    other.mkdir()
    user = subprocess.Popen(  # a process still running from a folder: a server or a stub
        [sys.executable, "-c", "import time; time.sleep(60)", f"{folders['used']}/backends"]
    )
    try:
        assert remove_orphaned_workdirs(tmp_path) == [folders["dead"]]
    finally:
        user.kill()
        user.wait()
    assert [name for name, folder in folders.items() if folder.exists()] == [
        "alive",
        "none",
        "used",
    ]
    assert other.exists()


def test_start_failure_raises_with_the_log_tail(tmp_path):
    (tmp_path / "bad").mkdir()
    with pytest.raises(ServerError, match="model repository not found"):
        TritonServer(tmp_path / "missing").start()


def test_the_stub_numpy_is_this_environments_numpy_1():
    assert machine.stub_numpy_version() == np.__version__
    assert machine.stub_numpy_problem() is None


def test_numpy_2_for_the_stub_is_refused_with_the_install_command(monkeypatch, tiny_repository):
    monkeypatch.setattr(machine, "stub_numpy_version", lambda: "2.5.2")
    with pytest.raises(ServerUnavailable, match=r"numpy 2\.5\.2 .*-m pip install 'numpy<2'"):
        TritonServer(tiny_repository, mode="embedded").start()
    monkeypatch.setattr(server_module, "docker_engine_available", lambda: (False, "no engine"))
    with pytest.raises(
        ServerUnavailable, match=r"no way to run Triton here: embedded: numpy 2\.5\.2"
    ):
        server_module.choose_mode("auto")


def test_calls_on_a_dead_server_raise_with_its_log(tiny_repository):
    running = TritonServer(tiny_repository).start()
    running.process.kill()
    running.process.wait()
    with pytest.raises(ServerError, match="no longer running") as error:
        running.load_model("tiny_onnx")
    assert "tritonserver log" in str(error.value)
    running.stop()


# ----------------------------------------------------------------------------- docker
def test_docker_command_is_exact(tmp_path):
    command = docker_command(
        tmp_path, Ports(9000, 9001, 9002), name="lab", gpus=True, models=["yolo11n_onnx"]
    )
    assert command[:4] == ["docker", "run", "--rm", "--detach"]
    assert "--shm-size=2g" in command
    for host_port, container_port in [(9000, 8000), (9001, 8001), (9002, 8002)]:
        assert f"127.0.0.1:{host_port}:{container_port}" in command
    assert f"{tmp_path.resolve()}:/models:ro" in command
    assert command[command.index("--gpus") + 1] == "all"
    image = command.index("nvcr.io/nvidia/tritonserver:24.10-py3")
    assert command[image + 1] == "tritonserver"
    assert "--model-repository=/models" in command
    assert "--model-control-mode=explicit" in command
    assert "--load-model=yolo11n_onnx" in command
    assert "--backend-directory" not in " ".join(command)  # native backends in the image


def test_docker_command_without_gpu_has_no_gpus_flag(tmp_path):
    assert "--gpus" not in docker_command(tmp_path, Ports(1, 2, 3))


def test_a_release_from_26_05_on_is_told_to_accept_client_shared_memory(tmp_path):
    matching = docker_command(tmp_path, Ports(1, 2, 3))
    current = docker_command(tmp_path, Ports(1, 2, 3), tag=CURRENT_NGC_TAG)
    assert "--allow-client-shm=true" not in matching  # 24.10 does not know the flag
    assert f"nvcr.io/nvidia/tritonserver:{CURRENT_NGC_TAG}-py3" in current
    assert current[current.index("tritonserver") + 1 :][-1] == "--allow-client-shm=true"
    assert release_arguments("26.04") == [] and release_arguments("26.05") != []
    with pytest.raises(ValueError, match="26.11"):
        docker_command(tmp_path, Ports(1, 2, 3), tag="latest")


def test_the_readme_shows_the_current_releases_command_as_the_code_builds_it():
    built = docker_command(
        "$PWD/model_repository", Ports(8000, 8001, 8002), gpus=True, tag=CURRENT_NGC_TAG
    )
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert f"```bash\n{format_command(built)}\n```" in readme
