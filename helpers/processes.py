"""The course's server processes: how they start and stop, and whether they are gone.

The servers (``tritonserver`` with its Python stub processes, ``netron``, ``uvicorn``,
``envoy``) run as child processes of the notebook's kernel, through one lifecycle
(``ChildServer``) that never lets one outlive the process that started it. These functions
look at them by process id with ``psutil``, as the reliability tests
(``tests/test_reliability_*.py``) do:

    from helpers.processes import course_processes
    [(p.pid, p.name()) for p in course_processes()]
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import psutil

from helpers.paths import build_dir

_PR_SET_PDEATHSIG = 1

#: What the course's server processes are called (executable name or command line).
SERVER_MARKERS: tuple[str, ...] = (
    "tritonserver",
    "triton_python_backend_stub",
    "netron",
    "uvicorn",
    "envoy",
)


def is_alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (exited, not yet reaped) counts as gone."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def wait_until_gone(pids: Iterable[int], timeout: float = 10.0) -> list[int]:
    """Wait up to ``timeout`` seconds for every pid to exit; return those still running."""
    remaining = list(pids)
    deadline = time.monotonic() + timeout
    while True:
        remaining = [pid for pid in remaining if is_alive(pid)]
        if not remaining or time.monotonic() >= deadline:
            return remaining
        time.sleep(0.1)


def is_server_process(process: psutil.Process) -> bool:
    """Whether ``process`` is one of the course's servers (see ``SERVER_MARKERS``)."""
    try:
        words = " ".join([process.name(), *process.cmdline()[:4]])
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    return any(marker in words for marker in SERVER_MARKERS)


def course_processes(parent: int | None = None) -> list[psutil.Process]:
    """The running server processes below ``parent`` (default: this process), stubs included."""
    try:
        children = psutil.Process(parent or os.getpid()).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [child for child in children if is_alive(child.pid) and is_server_process(child)]


def process_tree(pid: int) -> list[int]:
    """``pid`` and the pids of all its running descendants (a server and its stubs)."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [pid, *(child.pid for child in children)]


def normalise_address(address: str) -> str:
    """``::ffff:127.0.0.1`` (an IPv4 address on an IPv6 socket, as gRPC binds) -> ``127.0.0.1``."""
    ip = ipaddress.ip_address(address.split("%")[0])
    mapped = getattr(ip, "ipv4_mapped", None)
    return str(mapped or ip)


def is_loopback_address(address: str) -> bool:
    """True for 127.0.0.0/8 and ::1 (and ``localhost``); False for 0.0.0.0, :: and real interfaces."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(normalise_address(address)).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


#: Runs as the child's first program: asks Linux for a signal when the parent (argv[2]) dies, and
#: exits if it already has, then becomes the command. No Python code may run between fork and
#: exec (a ``preexec_fn``): where the parent has gRPC threads (a Jupyter kernel with a
#: tritonclient.grpc client), the child then aborted or crashed (SIGABRT/SIGSEGV) in 40 of 300
#: starts on this machine, in gRPC's fork handlers; without one, Python starts the child with vfork.
_PARENT_DEATH_LAUNCHER = (
    "import ctypes, os, sys; "
    f"ctypes.CDLL(None).prctl({_PR_SET_PDEATHSIG}, int(sys.argv[1]), 0, 0, 0); "
    "os.getppid() == int(sys.argv[2]) or os._exit(1); "
    "os.execvp(sys.argv[3], sys.argv[3:])"
)


def die_with_parent(command: Sequence[str], sig: int = signal.SIGKILL) -> list[str]:
    """``command`` started so that Linux sends it ``sig`` when this process dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return list(command)
    launcher = [sys.executable, "-I", "-S", "-c", _PARENT_DEATH_LAUNCHER]
    return [*launcher, str(int(sig)), str(os.getpid()), *map(str, command)]


def terminate(process: subprocess.Popen, grace_period: float = 5.0) -> int | None:
    """Stop a child: SIGTERM, then SIGKILL after ``grace_period`` seconds; return its exit code."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace_period)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Ask the kernel for ``count`` distinct free TCP ports on ``host`` (introduced in notebook 01)."""
    sockets, ports = [], []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
            ports.append(sock.getsockname()[1])
    finally:
        for sock in sockets:
            sock.close()
    return ports


#: What the servers say when a port they were given was taken before they could bind it
#: (Triton, uvicorn and Netron: "... already in use"; JupyterLab: "... is not available").
PORT_TAKEN = ("already in use", "is not available")

_Server = TypeVar("_Server", bound="ChildServer")


class ChildServer:
    """The one lifecycle of the course's servers in child processes: Triton
    (``helpers.server``), uvicorn (``helpers.fastapi_server``), Netron
    (``helpers.netron_view``), Envoy (``helpers.proxy``) and JupyterLab (``tools/browser.py``).

    ``start()`` takes ``port_count`` free ports on ``host`` (or the fixed ones), calls the
    subclass's ``_launch(ports)`` (which starts ``self.process``, usually with ``_spawn``, and
    names what stops it with ``_stop_with``) and ``_wait_until_ready()`` (by default: poll
    the subclass's ``_ready()``); when another process took a port in between, it stops and
    tries new ports, three times at most. The server stops on ``stop()``, on leaving a
    ``with`` block, when the object is collected, or at interpreter exit, whichever comes
    first (and with its parent, see ``die_with_parent``).
    """

    process: subprocess.Popen | None = None
    host: str = "127.0.0.1"
    port_count: int = 1
    startup_timeout: float = 60.0
    log_path: Path | None = None
    #: The program's name in messages ("tritonserver", "envoy", "uvicorn").
    program = "server"
    #: What ``_wait_until_ready`` raises when the server exits or does not answer in time.
    error: type[Exception] = RuntimeError
    _finalizer: weakref.finalize | None = None

    def _fixed_ports(self) -> list[int] | None:
        """The port asked for (``self.port``, if the server has one), or None to pick free ones."""
        port = getattr(self, "port", None)
        return [port] if port else None

    def _launch(self, ports: list[int]) -> None:
        """Start ``self.process`` on ``ports`` and call ``_stop_with``."""
        raise NotImplementedError

    def _spawn(self, command: Sequence[str], log_name: str, **options: Any) -> None:
        """Start ``command`` as ``self.process``, dying with this process, its output logged.

        The log is ``build/logs/<log_name>``; ``options`` go to ``subprocess.Popen`` (env, cwd).
        """
        self.log_path = build_dir("logs") / log_name
        with open(self.log_path, "wb") as log:  # the child keeps its own copy of the handle
            self.process = subprocess.Popen(
                die_with_parent(command),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                **options,
            )

    def _ready(self) -> bool:
        """Whether the launched server answers (what ``_wait_until_ready`` polls)."""
        raise NotImplementedError

    def _wait_until_ready(self) -> None:
        """Return once ``_ready()``; raise ``error`` with the log tail if it exits or times out."""
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                message = f"{self.program} exited with code {code} while starting"
                raise self.error(message + self._log_excerpt())
            with contextlib.suppress(OSError, ValueError):  # not listening yet, half an answer
                if self._ready():
                    return
            time.sleep(0.1)
        message = f"{self.program} was not ready after {self.startup_timeout:.0f} s"
        raise self.error(message + self._log_excerpt())

    def log_tail(
        self,
        lines: int = 40,
        containing: Iterable[str] = (),
        at_least: int = 0,
        timeout: float = 30.0,
    ) -> str:
        """The last ``lines`` lines of the server log (only those containing a word, if given).

        ``at_least``: wait up to ``timeout`` s until that many such lines are there. A line a
        process writes through another one (Triton's Python stubs log through the server, by a
        message queue) lands a moment after the event it tells of; what is there is returned.
        """
        words = [word for word in containing if word]
        deadline = time.monotonic() + timeout
        while True:
            text = []
            if self.log_path is not None and self.log_path.exists():
                text = self.log_path.read_text(errors="replace").splitlines()
            if words:
                text = [line for line in text if any(word in line for word in words)]
            if len(text) >= at_least or time.monotonic() >= deadline:
                return "\n".join(text[-lines:])
            time.sleep(0.1)

    def _log_excerpt(self, word: str = "") -> str:
        """The log's last lines (those naming ``word``, if any do) to end an error message."""
        tail = (self.log_tail(20, [word]) if word else "") or self.log_tail(25)
        return f"\n--- {self.program} log (full log: {self.log_path}) ---\n{tail}" if tail else ""

    def _stop_with(self, stop: Callable[..., int | None], *args: Any) -> None:
        """Name what stops the launched server: ``stop(*args, grace_period=...)`` (no ``self``)."""
        self._finalizer = weakref.finalize(self, stop, *args)

    def start(self: _Server) -> _Server:
        """Start the server on free ports (or the fixed ones) and wait until it is ready."""
        if self.is_running():
            return self
        if self.process is not None:  # it died: reap it and clean up first
            self.stop()
        fixed = self._fixed_ports()
        for attempt in range(3):
            try:
                self._launch(fixed or free_ports(self.port_count, self.host))
                self._wait_until_ready()
                return self
            except Exception as error:
                self.stop()
                taken = any(words in str(error).lower() for words in PORT_TAKEN)
                if fixed or attempt == 2 or not taken:
                    raise
            except BaseException:
                self.stop()
                raise
        return self

    def stop(self, grace_period: float = 10.0) -> int | None:
        """Stop the server: SIGTERM, then SIGKILL after ``grace_period`` seconds; its exit code."""
        finalizer, self._finalizer = self._finalizer, None
        detached = finalizer.detach() if finalizer is not None else None
        code = None
        if detached is not None:
            _, stop, args, _ = detached
            code = stop(*args, grace_period=grace_period)
        elif self.process is not None:
            code = terminate(self.process, grace_period)
        self.process = None
        return code

    def is_running(self) -> bool:
        """True while the server process is alive."""
        return self.process is not None and self.process.poll() is None

    @property
    def running(self) -> bool:
        """Whether the server process is still alive."""
        return self.is_running()

    @property
    def pid(self) -> int | None:
        """The server's process id (None when stopped)."""
        return self.process.pid if self.process is not None else None

    def __enter__(self: _Server) -> _Server:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
