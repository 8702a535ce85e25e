"""Processes, ports and exposure: what the course's servers leave behind and who can reach them.

The notebooks here are real Jupyter kernels (``jupyter_client``) running the cells a learner
runs; every check is by process id and by the sockets each process listens on.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import textwrap
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import tritonclient.grpc as grpcclient
from jupyter_client.manager import KernelManager, start_new_kernel
from tritonclient.utils import InferenceServerException

import helpers.processes
from helpers.clients import infer
from helpers.fastapi_server import FastAPIServer
from helpers.netron_view import NetronServer
from helpers.paths import REPO_ROOT
from helpers.processes import (
    is_loopback_address,
    normalise_address,
    process_tree,
    wait_until_gone,
)
from helpers.server import CONTROL_HEADER, TritonServer
from tests.reliability_models import no_new_server_processes
from tests.tiny_models import sample_batch


@pytest.fixture(scope="module", autouse=True)
def _no_leftover_processes():
    with no_new_server_processes():
        yield


def listening_addresses(pid: int) -> dict[int, set[str]]:
    """The TCP ports ``pid`` listens on, each with the addresses it is bound to."""
    found: dict[int, set[str]] = {}
    for connection in psutil.Process(pid).net_connections(kind="inet"):
        if connection.status == psutil.CONN_LISTEN:
            address = normalise_address(connection.laddr.ip)
            found.setdefault(connection.laddr.port, set()).add(address)
    return found


def non_loopback_addresses() -> list[str]:
    """This machine's IPv4 addresses other than loopback (where another machine could connect)."""
    addresses = []
    for entries in psutil.net_if_addrs().values():
        for entry in entries:
            if entry.family.name == "AF_INET" and not is_loopback_address(entry.address):
                addresses.append(entry.address)
    return addresses


# ----------------------------------------------------------------------------- notebooks
NOTEBOOK_CELL = """
import json
from helpers.netron_view import NetronServer
from helpers.processes import process_tree
from helpers.server import TritonServer

server = TritonServer({repository!r}, models=["tiny_onnx"]).start()
netron = NetronServer({model!r})
started = {{"tritonserver": process_tree(server.pid), "netron": [netron.process.pid]}}
ports = {{"tritonserver": [server.ports.http, server.ports.grpc, server.ports.metrics],
         "netron": [netron.port]}}
if {with_fastapi!r}:
    from helpers.fastapi_server import FastAPIServer
    fastapi = FastAPIServer(torch_threads=1).start()
    started["uvicorn"], ports["uvicorn"] = [fastapi.pid], [fastapi.port]
print(json.dumps({{"started": started, "ports": ports, "http": server.http_url}}))
"""


def run_cell(client: Any, code: str) -> dict[str, Any]:
    """Execute one cell in a kernel; return the JSON it printed (fail with its error)."""
    printed: list[str] = []

    def hook(message: dict) -> None:
        if message["msg_type"] == "stream":
            printed.append(message["content"]["text"])
        elif message["msg_type"] == "error":
            printed.append("\n".join(message["content"]["traceback"]))

    reply = client.execute_interactive(code, output_hook=hook, timeout=180)
    assert reply["content"]["status"] == "ok", "".join(printed)
    return json.loads("".join(printed).strip().splitlines()[-1])


@pytest.fixture
def two_kernels() -> Iterator[list[tuple[KernelManager, Any]]]:
    """Two Jupyter kernels, as two notebooks open side by side (cwd: notebooks/)."""
    kernels = [start_new_kernel(kernel_name="python3", cwd=str(REPO_ROOT / "notebooks"))]
    kernels.append(start_new_kernel(kernel_name="python3", cwd=str(REPO_ROOT / "notebooks")))
    yield kernels
    for manager, client in kernels:
        client.stop_channels()
        if manager.has_kernel:
            manager.shutdown_kernel(now=True)


def test_two_notebooks_get_their_own_servers_and_none_outlives_its_kernel(
    tiny_repository: Path, two_kernels
):
    """Notebook A ends normally (kernel shut down); notebook B's kernel is killed (SIGKILL)."""
    model = tiny_repository / "tiny_onnx" / "1" / "model.onnx"
    reports: dict[str, dict] = {}

    def run(name: str, client: Any, with_fastapi: bool) -> None:
        cell = NOTEBOOK_CELL.format(
            repository=str(tiny_repository), model=str(model), with_fastapi=with_fastapi
        )
        reports[name] = run_cell(client, cell)

    threads = [
        threading.Thread(target=run, args=("A", two_kernels[0][1], True)),
        threading.Thread(target=run, args=("B", two_kernels[1][1], False)),
    ]
    for thread in threads:  # both notebooks start their servers at the same time
        thread.start()
    for thread in threads:
        thread.join()
    assert set(reports) == {"A", "B"}
    a, b = reports["A"], reports["B"]
    assert a["started"]["tritonserver"][0] != b["started"]["tritonserver"][0]
    assert not set(a["ports"]["tritonserver"]) & set(b["ports"]["tritonserver"])
    for report in (a, b):  # each notebook's server answers on its own ports
        outputs = infer(report["http"], "tiny_onnx", {"images": sample_batch(1)}, protocol="http")
        scores = outputs["scores"]
        assert scores.shape == (1, 4)

    # Every server a notebook starts listens on loopback only, by default.
    others = non_loopback_addresses()
    for report in (a, b):
        for program, pids in report["started"].items():
            listening = listening_addresses(pids[0])
            assert set(report["ports"][program]) <= set(listening), (program, listening)
            for port in report["ports"][program]:
                assert all(is_loopback_address(ip) for ip in listening[port]), (program, listening)
                for address in others:  # and nobody reaches it from another interface
                    with pytest.raises(ConnectionRefusedError):
                        socket.create_connection((address, port), timeout=2).close()

    pids_a = [pid for pids in a["started"].values() for pid in pids]
    pids_b = [pid for pids in b["started"].values() for pid in pids]
    assert len(pids_a) >= 4 and len(pids_b) >= 3  # server, stub, netron (and uvicorn)
    two_kernels[0][0].shutdown_kernel(now=False)  # the notebook is closed
    os.kill(two_kernels[1][0].provisioner.process.pid, signal.SIGKILL)  # the kernel dies
    assert wait_until_gone(pids_a + pids_b, timeout=20) == []


# ----------------------------------------------------------------------------- killed server
def test_a_killed_tritonserver_takes_its_stub_processes_with_it(tiny_repository: Path):
    """Nothing calls the server object after the kill: its stubs must still exit at once."""
    server = TritonServer(tiny_repository, models=["tiny_onnx", "tiny_torchscript"]).start()
    pids = process_tree(server.pid)
    assert len(pids) == 3  # tritonserver and one stub per model
    os.kill(server.pid, signal.SIGKILL)
    assert wait_until_gone(pids, timeout=5) == []
    server.stop()


# ----------------------------------------------------------------------------- ports
def taken_port() -> socket.socket:
    """A listening socket on a free loopback port: that port is taken until it is closed."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


@pytest.mark.parametrize("which", ["http", "grpc", "metrics"])
def test_triton_picks_other_ports_when_one_is_taken(tiny_repository, monkeypatch, which):
    """The free ports picked first are taken by someone else before Triton binds them."""
    real, calls = helpers.processes.free_ports, []
    with taken_port() as sock:
        taken = sock.getsockname()[1]

        def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
            calls.append(count)
            ports = real(count, host)
            if len(calls) == 1:
                ports[["http", "grpc", "metrics"].index(which)] = taken
            return ports

        monkeypatch.setattr(helpers.processes, "free_ports", free_ports)
        with TritonServer(tiny_repository, models=["tiny_onnx"]) as server:
            assert len(calls) == 2 and taken not in vars(server.ports).values()
            assert server.is_running()
            outputs = infer(server, "tiny_onnx", {"images": sample_batch(1)}, protocol="http")
            assert outputs["scores"].shape == (
                1,
                4,
            )
            with urllib.request.urlopen(server.metrics_url, timeout=5) as reply:
                assert b"nv_inference_request_success" in reply.read()


def test_netron_picks_another_port_when_its_port_is_taken(tiny_repository, monkeypatch):
    real, calls = helpers.processes.free_ports, []
    with taken_port() as sock:
        taken = sock.getsockname()[1]

        def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
            calls.append(host)
            return [taken] if len(calls) == 1 else real(count, host)

        monkeypatch.setattr(helpers.processes, "free_ports", free_ports)
        with NetronServer(tiny_repository / "tiny_onnx" / "1" / "model.onnx") as netron:
            assert len(calls) == 2 and netron.port != taken and netron.answers()


def test_uvicorn_picks_another_port_when_its_port_is_taken(tmp_path, monkeypatch):
    """The same start-up path as the YOLO app (FastAPIServer), with an app that loads nothing."""
    (tmp_path / "tiny_health_app.py").write_text(
        textwrap.dedent(
            """
            from fastapi import FastAPI

            app = FastAPI()


            @app.get("/health")
            def health() -> dict:
                return {"ready": True}
            """
        )
    )
    real, calls = helpers.processes.free_ports, []
    with taken_port() as sock:
        taken = sock.getsockname()[1]

        def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
            calls.append(count)
            return [taken] if len(calls) == 1 else real(count, host)

        monkeypatch.setattr(helpers.processes, "free_ports", free_ports)
        server = FastAPIServer(app="tiny_health_app:app", env={"PYTHONPATH": str(tmp_path)})
        with server:
            assert len(calls) == 2 and server.port != taken
            assert server.get("/health") == (200, {"ready": True})
            assert set(listening_addresses(server.pid)) == {server.port}


# ----------------------------------------------------------------------------- exposure
def test_all_interfaces_only_when_asked_and_model_control_stays_locked(tiny_repository: Path):
    with TritonServer(tiny_repository, host="0.0.0.0", models=["tiny_onnx"]) as server:
        listening = listening_addresses(server.pid)
        for port in vars(server.ports).values():
            assert listening[port] <= {"0.0.0.0", "::"}, listening  # every interface, as asked
        address = (non_loopback_addresses() or ["127.0.0.1"])[0]
        url = f"{address}:{server.ports.http}"
        # Inference is served to the network ...
        outputs = infer(url, "tiny_onnx", {"images": sample_batch(1)}, protocol="http")
        assert outputs["scores"].shape == (1, 4)
        # ... the model-repository API is not, over HTTP or gRPC, without the server's key.
        for path in ("/v2/repository/index", "/v2/repository/models/tiny_torchscript/load"):
            request = urllib.request.Request(f"http://{url}{path}", data=b"{}", method="POST")
            with pytest.raises(urllib.error.HTTPError) as error:
                urllib.request.urlopen(request, timeout=10)
            assert error.value.code == 403
            assert f"This API is restricted, expecting header '{CONTROL_HEADER}'" in (
                error.value.read().decode()
            )
        with grpcclient.InferenceServerClient(f"{address}:{server.ports.grpc}") as client:
            with pytest.raises(InferenceServerException, match="This protocol is restricted"):
                client.load_model("tiny_torchscript")
        assert not server.model_ready("tiny_torchscript")
        server.load_model("tiny_torchscript")  # the helpers hold the key
        assert server.model_ready("tiny_torchscript")
    with NetronServer(tiny_repository / "tiny_onnx" / "1" / "model.onnx", host="0.0.0.0") as netron:
        assert listening_addresses(netron.process.pid) == {netron.port: {"0.0.0.0"}}


def test_loopback_servers_need_no_key_and_jupyterlab_stays_on_loopback(tiny_repository: Path):
    with TritonServer(tiny_repository) as server:
        assert server.repository_index()  # a loopback server's repository API is open to it
        assert not any("restricted" in arg for arg in server.process.args)
    recipe = re.search(r"^lab:.*\n((?:\t.*\n)+)", (REPO_ROOT / "Makefile").read_text(), re.M)
    assert recipe is not None
    command = recipe.group(1).strip()
    assert "jupyter lab" in command
    assert re.findall(r"--(?:ServerApp\.)?ip[= ](\S+)", command) == ["127.0.0.1"]
