"""Start, use and stop the FastAPI baseline under uvicorn (introduced in notebook 06).

Like ``helpers.server.TritonServer``, a ``helpers.processes.ChildServer``: binds to 127.0.0.1
on a free port, waits until the model is loaded, and never outlives the Python process that
started it.

    from helpers.fastapi_server import FastAPIServer
    with FastAPIServer() as server:
        print(server.url, server.info())
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from helpers.paths import REPO_ROOT, build_dir
from helpers.processes import ChildServer, die_with_parent, terminate
from helpers.server import ServerError


@dataclass(eq=False)
class FastAPIServer(ChildServer):
    """A uvicorn process serving a FastAPI app on loopback (introduced in notebook 06).

    ``torch_threads`` is the intra-op thread count torch gets (``OMP_NUM_THREADS``); by
    default one per physical core, torch's own default. It is always set explicitly because
    importing Ultralytics sets ``OMP_NUM_THREADS=1`` when it is unset, so the count would
    otherwise depend on what the starting process imported first. ``env`` adds more
    environment variables for the server.
    """

    app: str = "helpers.lessons.fastapi_vs_triton:app"  # notebook 06's app cell
    host: str = "127.0.0.1"
    port: int | None = None
    startup_timeout: float = 180.0
    torch_threads: int | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    process: subprocess.Popen | None = field(default=None, init=False, repr=False)
    log_path: Path | None = field(default=None, init=False)

    def command(self) -> list[str]:
        """The uvicorn command line (an argument list; one worker process)."""
        return [
            sys.executable,
            "-m",
            "uvicorn",
            self.app,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--workers",
            "1",
            "--log-level",
            "warning",
            "--no-access-log",
            "--timeout-graceful-shutdown",
            "5",
        ]

    def environment(self) -> dict[str, str]:
        """The server's environment: ours, with the torch thread count pinned, plus ``env``."""
        threads = self.torch_threads or psutil.cpu_count(logical=False) or os.cpu_count() or 1
        return {**os.environ, "OMP_NUM_THREADS": str(threads), **self.env}

    def start(self) -> FastAPIServer:
        """Start uvicorn and wait until ``/health`` answers (the model is loaded by then)."""
        return super().start()

    def _launch(self, ports: list[int]) -> None:
        self.port = ports[0]
        self.log_path = build_dir("logs") / f"fastapi-{self.port}.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                die_with_parent(self.command()),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=REPO_ROOT,
                env=self.environment(),
            )
        self._stop_with(terminate, self.process)

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(
                    f"uvicorn exited with code {self.process.returncode} while starting"
                    + self._log_excerpt()
                )
            try:
                if self.get("/health")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise ServerError(
            f"uvicorn was not ready after {self.startup_timeout:.0f} s" + self._log_excerpt()
        )

    @property
    def url(self) -> str:
        """``http://host:port`` of the app."""
        return f"http://{self.host}:{self.port}"

    def get(self, path: str) -> tuple[int, Any]:
        """GET ``path``; return the status and the decoded JSON body."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as reply:
                return reply.status, json.loads(reply.read())
        except urllib.error.HTTPError as error:
            body = error.read()
            try:
                return error.code, json.loads(body or b"null")
            except ValueError:
                return error.code, body.decode(errors="replace")

    def info(self) -> dict[str, Any]:
        """What the app reports about itself: weights, torch version and threads."""
        return self.get("/info")[1]

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the uvicorn log."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def _log_excerpt(self) -> str:
        tail = self.log_tail()
        return f"\n--- uvicorn log ({self.log_path}) ---\n{tail}" if tail else ""
