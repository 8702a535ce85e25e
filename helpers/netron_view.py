"""Netron, the model graph viewer, in a child process on loopback (introduced in notebook 01).

``NetronServer(path)`` starts ``netron`` on 127.0.0.1 with a free port, waits until it answers
HTTP, and gives ``.url``, ``.iframe()`` for JupyterLab and ``.stop()``. Its lifecycle is
``helpers.processes.ChildServer``'s: the child never outlives the Python process that started it.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path

from IPython.display import IFrame

from helpers.processes import ChildServer, terminate

#: Starts netron's own command line (the package has no ``__main__``) with the arguments after it.
_NETRON_MAIN = "import sys, netron; sys.argv[0] = 'netron'; netron.main()"


def netron_command(
    model_path: str | os.PathLike[str], host: str | None = None, port: int | None = None
) -> list[str]:
    """``netron [--host H] [--port P] MODEL``: Netron's command line for one model file (notebook 01)."""
    options = [*(["--host", host] if host else []), *(["--port", str(port)] if port else [])]
    return ["netron", *options, str(model_path)]


class NetronServer(ChildServer):
    """Netron serving one model file on loopback, in a child process (introduced in notebook 01).

    ``iframe()`` shows the graph in JupyterLab when the browser runs on the same machine as the
    kernel (for a remote kernel, forward the port: ``ssh -L <port>:127.0.0.1:<port> host``).
    """

    program, startup_timeout = "netron", 30.0

    def __init__(self, model_path: str | os.PathLike[str], host: str = "127.0.0.1") -> None:
        self.model_path = Path(model_path).resolve()
        if not self.model_path.is_file():
            raise FileNotFoundError(f"no model file at {self.model_path}")
        self.host = host
        self.port: int | None = None
        self.start()

    def _launch(self, ports: list[int]) -> None:
        self.port = ports[0]
        self.url = f"http://{self.host}:{self.port}/"
        netron = netron_command(self.model_path, self.host, self.port)  # what a learner types
        command = [sys.executable, "-c", _NETRON_MAIN, *netron[1:], "--verbosity", "quiet"]
        self._spawn(command, f"netron-{self.port}.log")
        self._stop_with(terminate, self.process)

    def _ready(self) -> bool:
        return self.answers()

    def answers(self) -> bool:
        """Whether the server answers ``GET /`` with HTTP 200 right now."""
        try:
            with urllib.request.urlopen(self.url, timeout=2) as response:  # noqa: S310 - loopback URL we built
                return response.status == 200
        except OSError:  # refused, reset, timed out, an HTTP error status: all OSErrors
            return False

    def iframe(self, width: str | int = "100%", height: int = 600) -> IFrame:
        """The graph as an IFrame for JupyterLab (the browser must reach ``url``)."""
        return IFrame(self.url, width=width, height=height)
