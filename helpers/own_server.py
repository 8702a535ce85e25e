"""A Triton the learner started (the NGC container on their GPU box), used in place of the
server a notebook would start: ``TRITON_URL`` in notebooks 03-09.

    server = use_triton(TRITON_URL, models=["yolo11n_onnx"]).start()

With ``TRITON_URL = None`` that is ``TritonServer(models=[...])``, as before. With an address
(``"127.0.0.1:8000"``, its HTTP port; gRPC and metrics on the next two ports, as Triton's
defaults and the course's ``docker run`` have them) the notebook loads what it needs through
the repository API, and at the end unloads what it loaded and reloads from disk what it
changed: the learner's server keeps running as it was. That server must see the course's
``model_repository/`` (the ``docker run`` command mounts it at ``/models``) and run with
``--model-control-mode=explicit``; notebooks 08 and 09 also need its response cache
(``--cache-config=local,size=67108864``) and 09 its rate limiter (``--rate-limit=execution_count``).
"""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass, field
from typing import Any

from helpers.server import Ports, ServerError, ServerUnavailable, TritonServer


@dataclass(eq=False)
class OwnTriton(TritonServer):
    """The learner's running Triton at ``url``: loads and unloads models, never starts or stops it."""

    url: str = "127.0.0.1:8000"
    _ready_before: set[str] = field(default_factory=set, init=False, repr=False)
    _changed: set[str] = field(default_factory=set, init=False, repr=False)
    _connected: bool = field(default=False, init=False, repr=False)

    def start(self) -> OwnTriton:
        """Check that the server answers, note what it has loaded, load ``models``."""
        host, _, port = self.url.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"TRITON_URL is host:port of Triton's HTTP endpoint, not {self.url!r}")
        self.host, http = host, int(port)
        self.ports = Ports(http, http + 1, http + 2)
        if not self.is_running():
            raise ServerUnavailable(
                f"no Triton answers at http://{self.url}/v2/health/live: start yours (README, "
                "'The NGC container today') or set TRITON_URL = None to let the notebook start one"
            )
        if self.cache_size and not self._has_cache():
            raise ServerUnavailable(
                f"this notebook uses Triton's response cache, and the Triton at {self.url} has "
                f"none: start it with --cache-config=local,size={self.cache_size} (README)"
            )
        self.mode = "yours"
        self._connected = True
        self._ready_before = self._ready_models()
        for name in self.models:
            self.load_model(name)
        return self

    def load_model(self, name: str, config: str | dict | None = None, **kwargs: Any) -> None:
        self._changed.add(name)
        super().load_model(name, config, **kwargs)

    def stop(self, grace_period: float = 10.0) -> None:
        """Leave the server as it was: unload what this notebook loaded, reload what it changed."""
        if not self._connected or not self.is_running():
            self._connected = False
            return None
        for name in sorted(self._ready_models() - self._ready_before):
            self.unload_model(name)
        for name in sorted(self._changed & self._ready_before):
            super().load_model(name)  # config.pbtxt as it is on disk
        self._changed.clear()
        self._connected = False
        return None

    def is_running(self) -> bool:
        """True while the server answers its liveness probe."""
        return self.ports is not None and self._get("/v2/health/live") == 200

    @property
    def pid(self) -> None:
        """Unknown: the server is the learner's process (or container)."""
        return None

    def log_tail(self, lines: int = 40, containing: Any = (), **waiting: Any) -> str:
        """Empty, at once: the log is where the learner started the server (``docker logs``)."""
        return ""

    def _has_cache(self) -> bool:
        """Whether the server reports response-cache metrics (it has a cache configured)."""
        try:
            with urllib.request.urlopen(self.metrics_url, timeout=5) as reply:
                return b"nv_cache_num_" in reply.read()
        except OSError:
            return False

    def _ready_models(self) -> set[str]:
        return {m["name"] for m in self.repository_index() if m.get("state") == "READY"}

    def _check_alive(self) -> None:
        if not self.is_running():
            raise ServerError(f"the Triton at {self.url} does not answer")


def use_triton(url: str | None = None, **options: Any) -> TritonServer:
    """The server a notebook starts (``url`` None) or the learner's own at ``url`` (notebooks 03-09)."""
    return TritonServer(**options) if url is None else OwnTriton(url=url, **options)
