"""Headless Chromium and a throw-away JupyterLab: the learner's view, for tests and README screenshots.

Used by ``tests/test_browser.py`` and ``python -m tools.screenshots``; not by the notebooks.

* ``chromium_page()`` drives the system Chromium (Debian's ``chromium`` package) through
  Playwright with ``executable_path`` set, so Playwright never downloads a browser. The
  browser runs headless, with no sandbox (root in CI containers), no background networking,
  and a host resolver that answers only loopback: every page it opens is served on
  127.0.0.1, and nothing waits on a network lookup on an offline machine. Playwright gives
  each launch a new empty profile and deletes it on close.
* ``JupyterLabServer(root_dir)`` starts JupyterLab on loopback with a random token and a
  free port, with its own empty configuration, data, runtime, settings and workspace
  folders (nothing from ``~/.jupyter`` is read or written), and stops it and its kernels
  afterwards. Like ``helpers.netron_view.NetronServer`` it never outlives the Python process
  that started it (``helpers.processes.ChildServer``: ``PR_SET_PDEATHSIG``, stopped at exit).
* ``open_notebook`` / ``run_all_cells`` do what a learner does: open a notebook, choose
  Run → Run All Cells in the menu, and wait until every code cell has run.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from helpers.paths import build_dir
from helpers.processes import ChildServer, die_with_parent, process_tree, terminate

if TYPE_CHECKING:
    from playwright.sync_api import Page

#: Where Debian's ``chromium`` package installs the browser; ``$CHROMIUM`` overrides it.
CHROMIUM_PROGRAMS: tuple[str, ...] = ("chromium", "chromium-browser")
#: Command-line switches for an offline, headless, unattended Chromium.
CHROMIUM_ARGS: tuple[str, ...] = (
    "--headless",
    "--no-sandbox",  # root in CI containers; pages come from our own loopback servers only
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",  # containers often have a 64 MiB /dev/shm
    # Every host name but loopback fails at once: no DNS look-up can stall a page offline.
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1 , EXCLUDE localhost",
)
#: JupyterLab user settings for an unattended session: no news or update pop-ups, every
#: cell attached to the page (so all outputs can be read), no autosave into the notebook.
LAB_SETTINGS: dict[str, dict[str, object]] = {
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
}

# What a code cell's input prompt shows: "[ ]:" not run, "[*]:" running or queued, "[3]:" done.
_CELLS_STATE = """() => {
  const cells = [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell')];
  return cells.map(cell => ({
    prompt: (cell.querySelector('.jp-InputPrompt') || {}).textContent || '',
    outputs: cell.querySelectorAll('.jp-OutputArea-output').length,
    output: [...cell.querySelectorAll('.jp-OutputArea-output')].map(o => o.textContent).join('\\n'),
    source: [...cell.querySelectorAll('.jp-InputArea-editor .cm-line')].map(l => l.textContent).join('\\n'),
  }));
}"""


def find_chromium() -> str | None:
    """The system Chromium's path: ``$CHROMIUM``, else ``chromium`` on PATH, else None."""
    override = os.environ.get("CHROMIUM")
    if override:
        return shutil.which(override)
    for program in CHROMIUM_PROGRAMS:
        path = shutil.which(program)
        if path:
            return path
    return None


@contextlib.contextmanager
def chromium_page(
    executable: str | None = None, width: int = 1440, height: int = 900, timeout_s: float = 30.0
) -> Iterator[Page]:
    """A page in a new headless system Chromium (closed, with its profile, on exit)."""
    from playwright.sync_api import sync_playwright

    executable = executable or find_chromium()
    if executable is None:
        raise FileNotFoundError("no Chromium found: sudo apt-get install -y chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=list(CHROMIUM_ARGS), headless=True
        )
        try:
            context = browser.new_context(viewport={"width": width, "height": height})
            context.set_default_timeout(timeout_s * 1000)
            yield context.new_page()
        finally:
            browser.close()


class JupyterLabServer(ChildServer):
    """JupyterLab on loopback serving ``root_dir``, token-protected, in a child process.

    Use as a context manager, or call ``stop()``. Its configuration lives in a temporary
    folder removed on ``stop()``; its log goes to ``build/jupyterlab/``.
    """

    def __init__(
        self,
        root_dir: str | os.PathLike[str],
        host: str = "127.0.0.1",
        port: int | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        self.root_dir = Path(root_dir).resolve()
        if not self.root_dir.is_dir():
            raise NotADirectoryError(f"no folder at {self.root_dir}")
        self.host = host
        self.token = secrets.token_hex(24)
        self.home = Path(tempfile.mkdtemp(prefix="jupyterlab-home-"))
        self.port = port
        self.timeout_s = timeout_s
        self.start()

    def _launch(self, ports: list[int]) -> None:
        self._write_settings()  # again after a failed attempt: stop() removes the folder
        self.port = ports[0]
        self.url = f"http://{self.host}:{self.port}/"
        self.log_path = build_dir("jupyterlab") / f"jupyterlab-{self.port}.log"
        with open(self.log_path, "wb") as log:  # the child keeps its own copy of the handle
            self.process = subprocess.Popen(  # noqa: S603 - argument list, no shell
                die_with_parent(self.command(), signal.SIGTERM),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root_dir,
                env=self.environment(),
            )
        self._stop_with(_stop_tree, self.process, self.home)

    def command(self) -> list[str]:
        """The ``jupyter lab`` command line (no token on it: that travels in the environment)."""
        command = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            f"--ServerApp.ip={self.host}",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={self.root_dir}",
            f"--LabApp.user_settings_dir={self.home / 'settings'}",
            f"--LabApp.workspaces_dir={self.home / 'workspaces'}",
            "--LabApp.extension_manager=readonly",  # no PyPI queries from the extension manager
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            command.append("--allow-root")  # CI containers run as root
        return command

    def environment(self) -> dict[str, str]:
        """Our environment with the token and private Jupyter folders; this Python's bin first."""
        bin_dir = str(Path(sys.executable).parent)
        return {
            **os.environ,
            "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
            "JUPYTER_TOKEN": self.token,
            "JUPYTER_CONFIG_DIR": str(self.home / "config"),
            "JUPYTER_DATA_DIR": str(self.home / "data"),
            "JUPYTER_RUNTIME_DIR": str(self.home / "runtime"),
        }

    def _write_settings(self) -> None:
        self.home.mkdir(exist_ok=True)
        for plugin, values in LAB_SETTINGS.items():
            path = self.home / "settings" / f"{plugin}.jupyterlab-settings"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        for name in ("config", "data", "runtime", "workspaces"):
            (self.home / name).mkdir(exist_ok=True)

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"JupyterLab exited with code {self.process.returncode}: {self.log_tail()}"
                )
            if self.answers():
                return
            time.sleep(0.1)
        raise TimeoutError(
            f"JupyterLab did not answer at {self.url} within {self.timeout_s:.0f} s: {self.log_tail()}"
        )

    def log_tail(self, chars: int = 2000) -> str:
        """The end of the server's log."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def answers(self) -> bool:
        """Whether ``GET /api/status`` with the token answers HTTP 200 right now."""
        request = urllib.request.Request(
            self.url + "api/status", headers={"Authorization": f"token {self.token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=2) as response:  # noqa: S310 - loopback URL we built
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False

    def notebook_url(self, path: str) -> str:
        """The URL that opens ``path`` (relative to ``root_dir``) in JupyterLab, token included."""
        quoted = urllib.parse.quote(Path(path).as_posix())
        return f"{self.url}lab/tree/{quoted}?reset&token={self.token}"

    def process_ids(self) -> list[int]:
        """The server's process id and those of its descendants (kernels) right now."""
        return process_tree(self.process.pid)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return (
            f"JupyterLabServer({str(self.root_dir)!r}, url={self.url!r}, pid={self.pid}, {state})"
        )


def _stop_tree(
    process: subprocess.Popen[bytes], home: Path, grace_period: float = 5.0
) -> int | None:
    """SIGTERM the server (it shuts its kernels down), then kill whatever of its tree is left."""
    try:
        children = psutil.Process(process.pid).children(recursive=True)
    except psutil.Error:
        children = []
    code = terminate(process, grace_period)
    _gone, alive = psutil.wait_procs(children, timeout=5)
    for child in alive:  # kernels start in their own session: a process-group kill misses them
        with contextlib.suppress(psutil.Error):
            child.kill()
    psutil.wait_procs(alive, timeout=5)
    shutil.rmtree(home, ignore_errors=True)
    return code


# ----------------------------------------------------------------------------- in the page
@dataclass(frozen=True)
class CellState:
    """What the page shows of one code cell."""

    prompt: str  # "[ ]:", "[*]:" or "[7]:"
    outputs: int  # how many output areas
    output: str  # their text
    source: str

    @property
    def done(self) -> bool:
        """Whether the cell has run (its prompt holds an execution count)."""
        return self.execution_count is not None

    @property
    def execution_count(self) -> int | None:
        """The number in the prompt, or None before the cell has run."""
        number = self.prompt.strip().strip("[]:")
        return int(number) if number.isdigit() else None

    @property
    def error(self) -> str:
        """The traceback the cell shows, or ""."""
        return self.output if "Traceback (most recent call last)" in self.output else ""


def code_cells(page: Page) -> list[CellState]:
    """The code cells of the notebook shown in ``page``, as the page draws them."""
    return [CellState(**cell) for cell in page.evaluate(_CELLS_STATE)]


def open_notebook(page: Page, server: JupyterLabServer, path: str, timeout_s: float = 60.0) -> None:
    """Open ``path`` in JupyterLab and wait until its kernel is idle."""
    page.goto(server.notebook_url(path))
    page.locator(".jp-NotebookPanel .jp-CodeCell").first.wait_for(timeout=timeout_s * 1000)
    # The status bar shows "<kernel name> | Idle" once the kernel has started and connected.
    page.locator(".jp-StatusBar-Widget", has_text="| Idle").first.wait_for(timeout=timeout_s * 1000)


def run_all_cells(
    page: Page, timeout_s: float = 120.0, intended_errors: Collection[int] = ()
) -> list[CellState]:
    """Choose Run → Run All Cells in the menu bar and wait until every code cell has run.

    The notebook must have no outputs yet (the committed ones are stripped): a cell that
    already shows an execution count could not be told apart from one that has just run.
    ``intended_errors`` are the positions (among code cells) of cells tagged
    ``raises-exception``, which JupyterLab runs past. Raises ``RuntimeError`` with the cell's
    source and error as soon as any other cell shows a traceback, and ``TimeoutError`` when
    cells are still waiting after ``timeout_s``.
    """
    if any(cell.done for cell in code_cells(page)):
        raise ValueError("the notebook already shows outputs: open a stripped copy")
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    deadline = time.monotonic() + timeout_s
    cells: list[CellState] = []
    while time.monotonic() < deadline:
        cells = code_cells(page)
        failed = [c for i, c in enumerate(cells) if c.error and i not in intended_errors]
        if failed:
            raise RuntimeError(f"cell failed:\n{failed[0].source}\n{failed[0].error[-3000:]}")
        if cells and all(cell.done for cell in cells):
            page.wait_for_timeout(500)  # the last outputs may land just after the prompt
            return code_cells(page)
        time.sleep(0.25)
    waiting = [(cell.source.splitlines() or [""])[0] for cell in cells if not cell.done][:3]
    raise TimeoutError(f"cells still not run after {timeout_s:.0f} s: {waiting}")


def collapse_left_sidebar(page: Page) -> None:
    """Close JupyterLab's left sidebar (the file browser) by clicking its open tab, as a user does."""
    page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current").first.click()
    page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current").wait_for(state="detached")


# ----------------------------------------------------------------------------- Netron
def open_netron(page: Page, url: str, timeout_s: float = 60.0) -> None:
    """Open a ``NetronServer``'s page and wait until it has drawn the graph.

    Netron first shows a notice about its usage cookies, once per browser profile, and waits
    for "Accept"; a learner clicks it on their first visit. The page here starts with the
    notice marked as seen (its ``consent`` cookie), as a browser that has been there before.
    (Netron's usage reports go to analytics.google.com, which this browser cannot resolve.)
    Raises ``RuntimeError`` with Netron's message when it shows one instead of the graph,
    e.g. "Please update to the newest version." from a netron package older than 180 days.
    """
    page.context.add_cookies(
        [{"name": "consent", "value": str(int(time.time() * 1000)), "url": url}]
    )
    page.goto(url)
    nodes = page.locator("#canvas g.graph-node")
    message = page.locator("body.notification #message-text")
    nodes.first.or_(message).wait_for(state="attached", timeout=timeout_s * 1000)
    if message.count():
        raise RuntimeError(
            f"Netron shows a message instead of the graph: {message.text_content()!r}"
        )


class _NetronNodeTypes(HTMLParser):
    """Collects the operator type drawn in the header of every graph node of Netron's SVG."""

    def __init__(self) -> None:
        super().__init__()
        self.types: list[str] = []
        self._stack: list[str] = []  # role of each open <g>: "node", "type" or ""
        self._in_type_text = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = (dict(attrs).get("class") or "").split()
        if tag == "g":
            if "graph-node" in classes:
                self._stack.append("node")
            elif "node-item-type" in classes and self._stack and self._stack[-1] == "node":
                self._stack.append("type")
            else:
                self._stack.append("")
        elif tag == "text" and self._stack and self._stack[-1] == "type":
            self._in_type_text = True
            self.types.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "g" and self._stack:
            self._stack.pop()
        elif tag == "text":
            self._in_type_text = False

    def handle_data(self, data: str) -> None:
        if self._in_type_text:
            self.types[-1] += data


def netron_node_types(page: Page) -> Counter[str]:
    """How many graph nodes of each operator type (``Conv``, ``Concat``...) Netron has drawn.

    Read from the page's HTML: Netron replaces ``window.eval``, which Playwright's
    in-page helpers use, so text is not read element by element.
    """
    parser = _NetronNodeTypes()
    parser.feed(page.content())
    return Counter(parser.types)


def select_netron_node(page: Page, op_type: str) -> str:
    """Click the header of the first ``op_type`` node, as a learner does; return Netron's sidebar text."""
    exactly = re.compile(f"^{re.escape(op_type)}$")
    label = page.locator("text", has_text=exactly)  # the header's <title> holds the node's name
    header = page.locator("#canvas g.graph-node .node-item-type").filter(has=label).first
    header.click()
    sidebar = page.locator("#sidebar-content")
    sidebar.get_by_text(op_type, exact=True).first.wait_for()
    return sidebar.inner_text()
