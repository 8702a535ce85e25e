"""``make lab``, the README's way into JupyterLab, starts (as root too) and answers on loopback."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
import urllib.request

import psutil
import pytest

from helpers.paths import REPO_ROOT
from helpers.processes import free_ports

URL = re.compile(r"http://127\.0\.0\.1:(\d+)/lab\?token=(\w+)")


def _read_lines(stream, lines: list[str]) -> None:
    for line in iter(stream.readline, ""):
        lines.append(line)


def answers(request: urllib.request.Request, timeout: float = 30.0) -> bool:
    """Whether the request gets HTTP 200 within ``timeout`` seconds (a busy machine is slow)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
                return response.status == 200
        except OSError:
            time.sleep(0.5)
    return False


def test_make_lab_starts_on_loopback_and_prints_its_url(tmp_path):
    if not (REPO_ROOT / ".venv" / ".installed").exists():
        pytest.skip("make lab uses the project's .venv: run the tests through `make test`")
    port = free_ports(1, "127.0.0.1")[0]
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "JUPYTER_DATA_DIR": str(tmp_path / "data"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
    }
    process = subprocess.Popen(  # noqa: S603 - argument list, no shell
        ["make", "--no-print-directory", "lab", f"LAB_PORT={port}", "LAB_ARGS=--no-browser"],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # make, jupyter and its children in one group to stop
    )
    lines: list[str] = []
    threading.Thread(target=_read_lines, args=(process.stdout, lines), daemon=True).start()
    try:
        deadline = time.monotonic() + 90
        match = None
        while match is None and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.2)
            match = next(filter(None, map(URL.search, list(lines))), None)
        output = "".join(lines)
        assert match, f"no URL printed within 90 s (exit {process.poll()}):\n{output[-3000:]}"
        assert int(match.group(1)) == port
        if os.geteuid() == 0:
            assert "--allow-root is passed" in output and "127.0.0.1 only" in output
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/status",
            headers={"Authorization": f"token {match.group(2)}"},
        )
        assert answers(request), f"no answer on port {port}:\n{''.join(lines)[-3000:]}"
        listening = {
            c.laddr.ip
            for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port
        }
        assert listening == {"127.0.0.1"}
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
