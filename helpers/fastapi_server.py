"""Start, use and stop the FastAPI baseline under uvicorn (introduced in notebook 07).

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
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from helpers.paths import REPO_ROOT
from helpers.processes import ChildServer, terminate
from helpers.server import ServerError


@dataclass(eq=False)
class FastAPIServer(ChildServer):
    """A uvicorn process serving a FastAPI app on loopback (introduced in notebook 07).

    ``torch_threads`` is the intra-op thread count torch gets (``OMP_NUM_THREADS``); by
    default one per physical core, torch's own default. It is always set explicitly because
    importing Ultralytics sets ``OMP_NUM_THREADS=1`` when it is unset, so the count would
    otherwise depend on what the starting process imported first. ``env`` adds more
    environment variables for the server. ``start()`` returns once ``/health`` answers (the
    model is loaded by then).
    """

    program, error = "uvicorn", ServerError

    app: str = "helpers.lessons.fastapi_vs_triton:app"  # notebook 07's app cell
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

    def _launch(self, ports: list[int]) -> None:
        self.port = ports[0]
        log_name = f"fastapi-{self.port}.log"
        self._spawn(self.command(), log_name, cwd=REPO_ROOT, env=self.environment())
        self._stop_with(terminate, self.process)

    def _ready(self) -> bool:
        return self.get("/health")[0] == 200

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
