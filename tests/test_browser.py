"""The learner's view in a real browser: notebook 00 run through JupyterLab's menu, and the
exported YOLO11n graph in Netron.

The browser is Debian's ``chromium`` (headless, no sandbox, loopback-only host resolver),
driven by Playwright with ``executable_path`` set: no browser is downloaded. Without it the
browser tests skip with the install command (and fail in CI, which installs it).
Screenshots land in ``build/screenshots/``; ``python -m tools.screenshots`` renders the
README's pictures through the same functions.
"""

from __future__ import annotations

import json
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from collections import Counter
from pathlib import Path

import psutil
import pytest

from helpers import export, processes, yolo
from helpers.ort_optimize import op_counts
from helpers.paths import REPO_ROOT, build_dir
from helpers.processes import free_ports
from tests.conftest import require_system
from tools import browser
from tools.browser import JupyterLabServer
from tools.run_course import NOTEBOOKS_DIR
from tools.screenshots import ENVIRONMENT_NOTEBOOK, environment_report, netron_graph


@pytest.fixture(scope="module")
def chromium() -> str:
    return require_system("chromium", "chromium")


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """YOLO11n exported to ONNX into a temporary repository, as notebook 01 does."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", yolo.RandomWeightsWarning)
        loaded = yolo.load_yolo("n")
    return export.export_onnx(loaded, tmp_path_factory.mktemp("model_repository")).path


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's header."""
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", header[16:24])


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_jupyterlab_runs_the_environment_check_through_its_menu(chromium: str) -> None:
    committed = ENVIRONMENT_NOTEBOOK.read_bytes()
    screenshot = build_dir("screenshots") / "jupyterlab-environment-report.png"
    screenshot.unlink(missing_ok=True)

    run = environment_report(screenshot, chromium=chromium)

    # Every code cell ran once, in order, from a fresh kernel; the last one shows its output.
    assert [cell.execution_count for cell in run.cells] == list(range(1, len(run.cells) + 1))
    assert run.cells[-1].outputs and "embedded server" in run.cells[-1].output
    assert not [cell.source for cell in run.cells if cell.error]
    # The report table, as the page shows it.
    assert run.report["embedded tritonserver"] == "OK"
    assert {"Python", "glibc", "NVIDIA GPU", "perf_analyzer"} <= run.report.keys()
    assert set(run.report.values()) <= {"OK", "missing"}
    summary = next(cell.output for cell in run.cells if "report.summary()" in cell.source)
    assert "Triton server: embedded" in summary
    # JupyterLab and its kernel are gone; the committed notebook was not written to.
    assert len(run.process_ids) >= 2, "the server and a kernel"
    assert not [pid for pid in run.process_ids if alive(pid)]
    assert ENVIRONMENT_NOTEBOOK.read_bytes() == committed
    assert png_size(screenshot) == (1440, 1000)


def test_netron_draws_every_node_of_the_exported_yolo11n(chromium: str, onnx_model: Path) -> None:
    screenshot = build_dir("screenshots") / "netron-yolo11n.png"
    screenshot.unlink(missing_ok=True)

    view = netron_graph(onnx_model, screenshot, chromium=chromium)

    counts = op_counts(onnx_model)  # "ai.onnx:Conv" -> number of nodes
    assert view.node_types == Counter({op.split(":")[-1]: int(n) for op, n in counts.items()})
    assert view.node_types["Conv"] > 50 and view.node_types["Concat"] > 10
    # Clicking the first Conv shows its attributes and inputs, as notebook 01 tells the learner.
    sidebar = view.sidebar.splitlines()
    assert {"Conv", "ATTRIBUTES", "INPUTS", "name: images"} <= set(sidebar), sidebar
    assert any(line.startswith("ai.onnx") for line in sidebar), sidebar
    assert png_size(screenshot) == (1280, 800)


def test_jupyterlab_server_is_loopback_token_protected_and_stops(tmp_path: Path) -> None:
    with JupyterLabServer(tmp_path) as lab:
        assert lab.answers()
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(lab.url + "api/contents", timeout=5)  # noqa: S310 - loopback
        assert refused.value.code == 403
        listening = {
            conn.laddr.ip
            for conn in psutil.Process(lab.process.pid).net_connections("tcp")
            if conn.status == psutil.CONN_LISTEN
        }
        assert listening == {"127.0.0.1"}
        home = lab.home
    assert not lab.running and not home.exists()


def test_jupyterlab_server_picks_another_port_when_its_free_port_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    ports = iter([[taken.getsockname()[1]], free_ports(1)])
    monkeypatch.setattr(processes, "free_ports", lambda count, host: next(ports))
    with taken, JupyterLabServer(tmp_path) as lab:
        assert lab.port != taken.getsockname()[1] and lab.answers()
        assert lab.home.is_dir()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_jupyterlab_and_its_kernel_die_with_the_process_that_started_them(tmp_path: Path) -> None:
    script = (
        "import os, sys, time, urllib.request\n"
        "from tools.browser import JupyterLabServer\n"
        "lab = JupyterLabServer(sys.argv[1])\n"
        "request = urllib.request.Request(lab.url + 'api/kernels', data=b'{}', method='POST',\n"
        "    headers={'Authorization': 'token ' + lab.token})\n"
        "urllib.request.urlopen(request, timeout=30).read()\n"
        "while len(lab.process_ids()) < 2: time.sleep(0.1)\n"
        "print(lab.home, *lab.process_ids(), flush=True)\n"
        "os._exit(0)  # no atexit, no finalizers: only the kernel can stop the children\n"
    )
    done = subprocess.run(  # noqa: S603 - argument list, no shell
        [sys.executable, "-c", script, str(tmp_path)],
        cwd=REPO_ROOT,  # where ``tools`` is importable
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
    )
    home, *pids = done.stdout.split()
    shutil.rmtree(home, ignore_errors=True)  # its finalizer never ran
    deadline = time.monotonic() + 20
    while any(alive(int(pid)) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(pids) >= 2 and not [pid for pid in pids if alive(int(pid))]


def intended_error_positions(notebook: Path) -> set[int]:
    """Positions, among code cells, of the cells tagged ``raises-exception``."""
    code = [c for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code"]
    return {i for i, c in enumerate(code) if "raises-exception" in c["metadata"].get("tags", [])}


@pytest.mark.parametrize(
    "name", ["03_triton_serving.ipynb", "06_faster_whisper_python_backend.ipynb"]
)
def test_run_all_cells_goes_past_the_intended_errors(
    chromium: str, tmp_path: Path, name: str
) -> None:
    notebook = NOTEBOOKS_DIR / name
    intended = intended_error_positions(notebook)
    assert intended, f"{name} has no cell that raises on purpose"
    shutil.copyfile(notebook, tmp_path / name)  # JupyterLab may save: never into the checkout
    with JupyterLabServer(tmp_path) as lab, browser.chromium_page(chromium) as page:
        browser.open_notebook(page, lab, name)
        cells = browser.run_all_cells(page, timeout_s=600, intended_errors=intended)
        process_ids = lab.process_ids()
    # Every code cell ran, once, in order, the intended errors included; only those failed.
    assert [cell.execution_count for cell in cells] == list(range(1, len(cells) + 1))
    assert {i for i, cell in enumerate(cells) if cell.error} == intended
    assert not [pid for pid in process_ids if alive(pid)]
