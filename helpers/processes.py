"""Which server processes the course started, what they listen on, and whether they are gone.

The servers (``tritonserver`` with its Python stub processes, ``netron``, ``uvicorn``) run as
child processes of the notebook's kernel. These functions look at them by process id with
``psutil``, the way the reliability tests (``tests/test_reliability_*.py``) check that none
outlives the kernel or test that started it and that each listens on loopback only:

    from helpers.processes import course_processes, listening_addresses
    [(p.pid, p.name()) for p in course_processes()]
    listening_addresses(server.pid)        # {port: {"127.0.0.1"}, ...}
"""

from __future__ import annotations

import atexit
import ctypes
import ipaddress
import os
import signal
import subprocess
import sys
import time
import weakref
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, TypeVar

import psutil

_PR_SET_PDEATHSIG = 1

#: What the course's server processes are called (executable name or command line).
SERVER_MARKERS: tuple[str, ...] = (
    "tritonserver",
    "triton_python_backend_stub",
    "netron",
    "uvicorn",
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


def tree_rss_bytes(pids: Iterable[int]) -> int:
    """Resident memory of the given processes together (those that exited count 0)."""
    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def normalise_address(address: str) -> str:
    """``::ffff:127.0.0.1`` (an IPv4 address on an IPv6 socket, as gRPC binds) -> ``127.0.0.1``."""
    ip = ipaddress.ip_address(address.split("%")[0])
    mapped = getattr(ip, "ipv4_mapped", None)
    return str(mapped or ip)


def listening_addresses(pid: int) -> dict[int, set[str]]:
    """The TCP ports ``pid`` listens on, each with the addresses it is bound to."""
    found: dict[int, set[str]] = {}
    for connection in psutil.Process(pid).net_connections(kind="inet"):
        if connection.status == psutil.CONN_LISTEN:
            address = normalise_address(connection.laddr.ip)
            found.setdefault(connection.laddr.port, set()).add(address)
    return found


def is_loopback_address(address: str) -> bool:
    """True for 127.0.0.0/8 and ::1 (and ``localhost``); False for 0.0.0.0, :: and real interfaces."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(normalise_address(address)).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def non_loopback_addresses() -> list[str]:
    """This machine's IPv4 addresses other than loopback (where another machine could connect)."""
    addresses = []
    for entries in psutil.net_if_addrs().values():
        for entry in entries:
            if entry.family.name == "AF_INET" and not is_loopback_address(entry.address):
                addresses.append(entry.address)
    return addresses


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to send ``sig`` to the child when its parent dies (else None)."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)

    def set_pdeathsig() -> None:  # runs in the child between fork and exec
        libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)

    return set_pdeathsig


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


_Server = TypeVar("_Server", bound="ChildServer")


class ChildServer:
    """A server run as a child process (``self.process``), stopped by ``stop()``, on leaving a
    ``with`` block, when the object is collected, or at interpreter exit, whichever is first.

    A subclass starts its process, then calls ``_stop_with(function, *args)`` with what
    stops it (``terminate`` and the process, or more for a process tree).
    """

    process: subprocess.Popen

    def _stop_with(self, stop: Callable[..., Any], *args: Any) -> None:
        self._finalizer = weakref.finalize(self, stop, *args)
        atexit.register(self._finalizer)

    @property
    def running(self) -> bool:
        """Whether the server process is still alive."""
        return self.process.poll() is None

    def stop(self) -> int | None:
        """Stop the server (SIGTERM, then SIGKILL after a grace period); return its exit code."""
        self._finalizer()
        atexit.unregister(self._finalizer)
        return self.process.returncode

    def __enter__(self: _Server) -> _Server:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
