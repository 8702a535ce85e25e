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
import time
import urllib.request

import pytest

from helpers import processes
from helpers.processes import ChildServer, terminate, wait_until_gone


class HttpServer(ChildServer):
    """``python -m http.server`` on loopback."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port

    def _launch(self, ports: list[int]) -> None:
        self.port = ports[0]
        command = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(self.port)]
        self.process = subprocess.Popen(  # noqa: S603 - argument list, no shell
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self._stop_with(terminate, self.process)

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(self.process.stderr.read().decode(errors="replace"))
            try:  # an HTTP answer: the socket that holds a taken port accepts but never answers
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("http.server did not answer")


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
    with pytest.raises(RuntimeError, match="already in use"):
        server.start()
    assert server.process is None


def test_a_collected_server_is_stopped():
    server = HttpServer().start()
    pid = server.pid
    del server
    gc.collect()
    assert wait_until_gone([pid]) == []
