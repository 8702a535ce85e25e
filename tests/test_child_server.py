"""The one lifecycle of the course's child-process servers (helpers.processes.ChildServer).

Triton, uvicorn, Netron and JupyterLab all start, retry on a taken port and stop through it;
their own tests check each against the real server. Here a tiny ``python -m http.server``
child shows the base's rules on their own.
"""

from __future__ import annotations

import gc
import socket
import subprocess
import sys
import threading
import urllib.request

import pytest

from helpers import processes
from helpers.processes import ChildServer, terminate, wait_until_gone


class HttpServer(ChildServer):
    """``python -m http.server`` on loopback, launched and awaited by the base's own code."""

    program, startup_timeout = "http.server", 20.0

    def __init__(self, port: int | None = None) -> None:
        self.port = port

    def _launch(self, ports: list[int]) -> None:
        self.port = ports[0]
        command = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(self.port)]
        self._spawn(command, f"http-server-{self.port}.log")
        self._stop_with(terminate, self.process)

    def _ready(self) -> bool:
        # An HTTP answer: the socket that holds a taken port accepts but never answers.
        urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=0.5).close()
        return True


@pytest.fixture
def taken():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    with sock:
        yield sock.getsockname()[1]


def test_start_stop_and_the_context_manager():
    with HttpServer() as server:
        pid = server.pid
        assert server.is_running() and server.running and pid is not None
    assert not server.is_running() and server.pid is None
    assert wait_until_gone([pid]) == []
    assert server.start().is_running()  # a stopped server starts again
    assert server.stop() is not None and server.stop() is None  # stopping twice is harmless


def test_a_taken_free_port_is_replaced(taken, monkeypatch):
    real, calls = processes.free_ports, []

    def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
        calls.append(count)
        return [taken] if len(calls) == 1 else real(count, host)

    monkeypatch.setattr(processes, "free_ports", free_ports)
    with HttpServer() as server:
        assert calls == [1, 1] and server.port != taken and server.is_running()


def test_a_taken_fixed_port_is_an_error(taken):
    server = HttpServer(port=taken)
    with pytest.raises(RuntimeError, match="http.server exited with code 1 while starting") as error:
        server.start()
    assert server.process is None
    assert "already in use" in str(error.value)  # the message ends with the server's log


def test_a_collected_server_is_stopped():
    server = HttpServer().start()
    pid = server.pid
    del server
    gc.collect()
    assert wait_until_gone([pid]) == []


def test_children_start_while_this_process_talks_grpc():
    """A Jupyter kernel holds tritonclient.grpc clients when it starts the next server. A child
    that ran Python code between fork and exec there aborted or crashed in gRPC's fork handlers
    (40 of 300 starts); die_with_parent's children run none, so every one starts."""
    from concurrent import futures

    import grpc

    server = grpc.server(futures.ThreadPoolExecutor(2))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    done = threading.Event()

    def talk() -> None:  # keep gRPC's threads busy, as clients under load do
        while not done.is_set():
            try:
                channel.unary_unary("/lab.Test/Call")(b"", timeout=0.05)
            except grpc.RpcError:
                pass

    talker = threading.Thread(target=talk, daemon=True)
    talker.start()
    try:
        codes = [
            subprocess.run(processes.die_with_parent(["true"]), check=False).returncode
            for _ in range(100)
        ]
    finally:
        done.set()
        talker.join(5)
        channel.close()
        server.stop(None)
    assert codes == [0] * 100


def test_a_child_dies_with_its_parent(tmp_path):
    """The parent-death signal reaches the command the launcher became (SIGKILL by default)."""
    script = (
        "import subprocess, sys, time; from helpers.processes import die_with_parent; "
        "child = subprocess.Popen(die_with_parent(['sleep', '60'])); print(child.pid, flush=True); "
        "time.sleep(60)"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    assert wait_until_gone([child], 10) == []
