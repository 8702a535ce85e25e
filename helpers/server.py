"""Start, use and stop a real Triton Inference Server (introduced in notebook 03).

Two launchers serve the same ``model_repository/``:

* ``embedded`` (default): the ``tritonserver`` binary inside the ``nvidia-pytriton``
  wheel, with the Python backend and the course's Python stand-ins for the
  onnxruntime / pytorch / tensorrt backends. No Docker needed.
* ``docker``: ``nvcr.io/nvidia/tritonserver:<tag>-py3`` with the repository mounted
  read-only; native backends, GPUs when present.

Either way the server binds to 127.0.0.1 on free ports, runs with
``--model-control-mode=explicit`` and never outlives the Python process that started it.
``host="0.0.0.0"`` (or another address) exposes it to the network on purpose; the
model-repository API (load, unload, index) then answers only requests carrying a key that
only this ``TritonServer`` object knows.

    from helpers.server import TritonServer
    with TritonServer(models=["yolo11n_onnx"]) as server:
        client = server.http_client()
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import psutil

from helpers.machine import (  # also importable from here: notebooks 03, 04, 06 and 07 do
    docker_engine_available,
    missing_libpython_hint,
    nvidia_gpu_present,
    python_shared_library,
    stub_numpy_problem,
)
from helpers.paths import MODEL_REPOSITORY, REPO_ROOT
from helpers.processes import ChildServer, is_alive, is_loopback_address, terminate
from helpers.repository import missing_model_file, wait_until_unloaded

#: The NGC release whose Triton matches the one bundled in nvidia-pytriton 0.7.0 (2.51.0).
DEFAULT_DOCKER_TAG = "24.10"
#: The newest NGC release when this was written: Triton 2.75.0, 17 Nov 2026 (README, "What
#: changed since 24.10").
CURRENT_NGC_TAG = "26.11"
#: From this release on, Triton refuses a client's shared memory regions unless started with
#: --allow-client-shm=true (the shared-memory extension's docs: "The default value is false").
CLIENT_SHM_OFF_SINCE = "26.05"
#: The course's stand-in backends (``backends/``): a folder per backend, beside the modules
#: they share. Read as files (Triton's stub loads them), never imported here.
STAND_INS = REPO_ROOT / "backends"
#: Shared memory for the Python backend (per-model stub <-> server IPC), 16 MiB steps.
PYTHON_SHM_BYTES = 16 * 1024 * 1024
#: Each server's work folder (its backends directory) in the temporary directory, and the file
#: there naming the process that owns it.
WORKDIR_PREFIX, OWNER_FILE = "triton-serving-lab-", "owner.pid"
Mode = Literal["auto", "embedded", "docker"]
#: Header the model-repository API needs when the server listens beyond loopback.
CONTROL_HEADER = "triton-serving-lab-control"
#: Triton APIs that need ``CONTROL_HEADER`` then: model control and the other admin APIs.
RESTRICTED_APIS = "model-repository,shared-memory,trace,logging"


class ServerError(RuntimeError):
    """The server could not start or stopped working; the message ends with its log tail."""


class ServerUnavailable(ServerError):
    """This launcher cannot run on this machine; the message says why and what to install."""


class ModelLoadError(ServerError):
    """A model failed to load; the message holds Triton's error and the related log lines."""


# ----------------------------------------------------------------------------- embedded
@dataclass(frozen=True)
class EmbeddedTriton:
    """Where the pieces of the tritonserver shipped in the nvidia-pytriton wheel are."""

    binary: Path
    library_dir: Path
    python_backend_dir: Path
    stub: Path
    cache_directory: Path  # the local response cache library (caches/local/)


def find_embedded_triton() -> EmbeddedTriton:
    """Locate the tritonserver binary, its libraries and the Python stub for this Python."""
    try:
        import pytriton
    except ImportError as error:
        raise ServerUnavailable(
            "nvidia-pytriton is not installed: run `make test` or `pip install -e .`"
        ) from error
    package = Path(pytriton.__file__).resolve().parent
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    found = EmbeddedTriton(
        binary=package / "tritonserver" / "bin" / "tritonserver",
        library_dir=package.parent / "nvidia_pytriton.libs",
        python_backend_dir=package / "tritonserver" / "backends" / "python",
        stub=package
        / "tritonserver"
        / "python_backend_stubs"
        / version
        / "triton_python_backend_stub",
        cache_directory=package / "tritonserver" / "caches",
    )
    for path in (found.binary, found.library_dir, found.python_backend_dir, found.stub):
        if not path.exists():
            raise ServerUnavailable(f"the nvidia-pytriton wheel has no {path} (Python {version})")
    return found


def assemble_backend_directory(target: Path, embedded: EmbeddedTriton) -> Path:
    """Build a --backend-directory: the Python backend plus the course's stand-in backends."""
    python_dir = target / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    # Copies, not symlinks: Triton refuses backend libraries that resolve outside the folder.
    for item in [*embedded.python_backend_dir.iterdir(), embedded.stub]:
        if item.is_file():
            shutil.copy2(item, python_dir / item.name)
    shared = [module for module in STAND_INS.glob("*.py") if module.name != "__init__.py"]
    for backend in sorted(path for path in STAND_INS.iterdir() if (path / "model.py").is_file()):
        folder = target / backend.name
        folder.mkdir(exist_ok=True)
        for module in [*backend.glob("*.py"), *shared]:
            shutil.copy2(module, folder / module.name)
    return target


def embedded_environment(embedded: EmbeddedTriton) -> dict[str, str]:
    """Environment for tritonserver: bundled libraries, and this venv first on PATH."""
    env = dict(os.environ)
    libraries = [str(embedded.library_dir)]
    libpython = python_shared_library()
    if libpython is not None and libpython.is_absolute():
        libraries.append(str(libpython.parent))
    if env.get("LD_LIBRARY_PATH"):
        libraries.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(libraries)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


@dataclass(frozen=True)
class Ports:
    """The three ports a Triton server listens on."""

    http: int
    grpc: int
    metrics: int


def restricted_api_arguments(key: str) -> list[str]:
    """Options making Triton refuse model control (and other admin APIs) without ``key``."""
    return [
        f"--http-restricted-api={RESTRICTED_APIS}:{CONTROL_HEADER}={key}",
        f"--grpc-restricted-protocol={RESTRICTED_APIS}:{CONTROL_HEADER}={key}",
    ]


def server_arguments(
    model_repository: str | Path,
    backend_directory: str | Path | None,
    host: str,
    ports: Ports,
    models: Sequence[str] = (),
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The tritonserver options both launchers use (explicit model control, given ports)."""
    args = [
        f"--model-repository={model_repository}",
        "--model-control-mode=explicit",
        f"--http-address={host}",
        f"--http-port={ports.http}",
        f"--grpc-address={host}",
        f"--grpc-port={ports.grpc}",
        f"--metrics-address={host}",
        f"--metrics-port={ports.metrics}",
        "--allow-metrics=true",
        "--strict-readiness=false",
        "--exit-timeout-secs=5",
        "--log-verbose=0",
        f"--backend-config=python,shm-default-byte-size={PYTHON_SHM_BYTES}",
        f"--backend-config=python,shm-growth-byte-size={PYTHON_SHM_BYTES}",
    ]
    if backend_directory is not None:
        args.append(f"--backend-directory={backend_directory}")
    args += [f"--load-model={name}" for name in models]
    return args + list(extra_args)


def response_cache_arguments(size: int, cache_directory: Path | None = None) -> list[str]:
    """tritonserver flags for a local response cache of ``size`` bytes (notebook 08).

    The wheel's server does not look in /opt/tritonserver/caches, so it needs
    ``--cache-directory`` (that spelling: the ``--cache-dir`` of the docs is refused).
    """
    if size < 1024:
        raise ValueError(f"a response cache needs at least 1024 bytes, got {size}")
    arguments = [f"--cache-config=local,size={size}"]
    if cache_directory is not None:
        arguments.append(f"--cache-directory={cache_directory}")
    return arguments


def rate_limit_arguments(rate_limit: bool, resources: Sequence[str] = ()) -> list[str]:
    """tritonserver flags for the rate limiter and its resource counts (notebook 09).

    Each resource is ``NAME:COUNT`` (global, or on every device) or ``NAME:COUNT:DEVICE``;
    without one, Triton makes each resource as large as the largest instance that asks for it.
    """
    if resources and not rate_limit:
        raise ValueError("rate_limit_resources need rate_limit=True")
    if not rate_limit:
        return []
    arguments = ["--rate-limit=execution_count"]
    for resource in resources:
        parts = resource.split(":")
        if len(parts) not in (2, 3) or not parts[0] or not all(p.isdigit() for p in parts[1:]):
            raise ValueError(f"a rate-limit resource is NAME:COUNT[:DEVICE], not {resource!r}")
        arguments.append(f"--rate-limit-resource={resource}")
    return arguments


# ----------------------------------------------------------------------------- docker
def ngc_image(tag: str = DEFAULT_DOCKER_TAG) -> str:
    """The NGC Triton image of release ``tag`` (``yy.mm``), with the Python backend (``-py3``)."""
    if not re.fullmatch(r"\d{2}\.\d{2}", tag):
        raise ValueError(f"an NGC release tag looks like 24.10 or 26.11, not {tag!r}")
    return f"nvcr.io/nvidia/tritonserver:{tag}-py3"


def release_arguments(tag: str) -> list[str]:
    """tritonserver flags release ``tag`` needs for what the course does (notebook 03).

    Since 26.05 client shared memory (notebook 05's ``--shared-memory=system``) is off unless
    asked for; older servers do not know the flag and would refuse to start with it.
    """
    return ["--allow-client-shm=true"] if tag >= CLIENT_SHM_OFF_SINCE else []


def docker_command(
    model_repository: str | Path,
    ports: Ports,
    *,
    tag: str = DEFAULT_DOCKER_TAG,
    name: str = "triton-serving-lab",
    host: str = "127.0.0.1",
    gpus: bool = False,
    shm_size: str = "2g",
    models: Sequence[str] = (),
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The ``docker run`` argument list for the NGC Triton image serving ``model_repository``.

    ``tag`` is the NGC release (``24.10`` matches the embedded server; ``CURRENT_NGC_TAG`` is
    the newest). Ports are published on ``host`` only (loopback by default); inside the
    container Triton listens on its usual 8000/8001/8002.
    """
    command = [
        "docker",
        "run",
        "--rm",
        "--detach",
        "--init",
        f"--name={name}",
        f"--shm-size={shm_size}",
        "--ulimit",
        "memlock=-1",
        "--ulimit",
        "stack=67108864",
        "--publish",
        f"{host}:{ports.http}:8000",
        "--publish",
        f"{host}:{ports.grpc}:8001",
        "--publish",
        f"{host}:{ports.metrics}:8002",
        "--volume",
        f"{model_repository}:/models:ro",  # TritonServer passes an absolute path
    ]
    if gpus:
        command += ["--gpus", "all"]
    command += [ngc_image(tag), "tritonserver"]
    command += server_arguments(
        "/models",
        None,
        "0.0.0.0",
        Ports(8000, 8001, 8002),
        models,
        [*release_arguments(tag), *extra_args],
    )
    return command


def runnable_embedded_triton() -> EmbeddedTriton:
    """The embedded tritonserver, once its Python stub can run here (libpython, numpy 1.x)."""
    embedded = find_embedded_triton()
    if python_shared_library() is None:
        raise ServerUnavailable(missing_libpython_hint())
    if numpy_problem := stub_numpy_problem():
        raise ServerUnavailable(numpy_problem)
    return embedded


def choose_mode(mode: Mode = "auto") -> Literal["embedded", "docker"]:
    """Resolve ``auto``: the embedded server when it can run here, else a Docker engine."""
    if mode != "auto":
        return mode
    try:
        runnable_embedded_triton()
        return "embedded"
    except ServerUnavailable as embedded_error:
        ok, reason = docker_engine_available()
        if ok:
            return "docker"
        raise ServerUnavailable(
            f"no way to run Triton here: embedded: {embedded_error}; docker: {reason}"
        ) from embedded_error


# ----------------------------------------------------------------------------- the server
@dataclass(eq=False)
class TritonServer(ChildServer):
    """A Triton server process (embedded binary or NGC container) and its clients.

    Introduced in notebook 03. Use it as a context manager, or call ``start()`` and
    ``stop()``. ``models`` are loaded at start; more with ``load_model``. ``start()`` on a
    server whose process died launches a new one. ``host`` is where it listens: loopback
    by default; any other address (``"0.0.0.0"``: every interface) serves the network, with
    the model-repository API locked to this object (see ``restricted_api_arguments``).
    """

    model_repository: str | Path = MODEL_REPOSITORY
    models: Sequence[str] = ()
    mode: Mode = "auto"
    host: str = "127.0.0.1"
    startup_timeout: float = 60.0
    docker_tag: str = DEFAULT_DOCKER_TAG  # the NGC release of mode="docker"
    extra_args: Sequence[str] = ()
    ports: Ports | None = None
    cache_size: int = 0  # bytes of response cache (models opt in with response_cache)
    rate_limit: bool = False  # --rate-limit=execution_count (instances ask for resources)
    rate_limit_resources: Sequence[str] = ()  # "NAME:COUNT[:DEVICE]" overrides of the counts
    process: subprocess.Popen | None = field(default=None, init=False, repr=False)
    log_path: Path | None = field(default=None, init=False)
    _workdir: Path | None = field(default=None, init=False, repr=False)
    _container: str | None = field(default=None, init=False, repr=False)
    _clients: weakref.WeakSet = field(default_factory=weakref.WeakSet, init=False, repr=False)
    _control_key: str = field(default_factory=lambda: secrets.token_hex(16), init=False, repr=False)

    # ----- lifecycle
    port_count = 3  # HTTP, gRPC, metrics
    program, error = "tritonserver", ServerError

    def start(self) -> TritonServer:
        """Start the server and wait until it is ready and ``models`` are loaded."""
        if self.is_running():
            return self
        repository = Path(self.model_repository).resolve()
        if not repository.is_dir():
            raise ServerError(f"model repository not found: {repository}")
        self.mode = choose_mode(self.mode)
        super().start()
        for name in self.models:
            self.load_model(name)
        return self

    def _fixed_ports(self) -> list[int] | None:
        return [self.ports.http, self.ports.grpc, self.ports.metrics] if self.ports else None

    def _launch(self, ports: list[int]) -> None:
        self.ports = Ports(*ports)
        repository = Path(self.model_repository).resolve()
        remove_orphaned_workdirs()
        self._workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX))
        (self._workdir / OWNER_FILE).write_text(str(os.getpid()))
        try:
            self._start_process(repository)
        except BaseException:
            shutil.rmtree(self._workdir, ignore_errors=True)
            raise
        self._stop_with(_stop, self.process, self._container, self._workdir, self._clients)

    def _start_process(self, repository: Path) -> None:
        log_name = f"tritonserver-{self.ports.http}.log"
        extra_args = list(self.extra_args)
        extra_args += rate_limit_arguments(self.rate_limit, self.rate_limit_resources)
        if not is_loopback_address(self.host):
            extra_args += restricted_api_arguments(self._control_key)
        if self.mode == "embedded":
            embedded = runnable_embedded_triton()
            if self.cache_size:
                extra_args += response_cache_arguments(self.cache_size, embedded.cache_directory)
            backends = assemble_backend_directory(self._workdir / "backends", embedded)
            command = [str(embedded.binary)] + server_arguments(
                repository, backends, self.host, self.ports, extra_args=extra_args
            )
            self._spawn(command, log_name, env=embedded_environment(embedded), cwd=self._workdir)
        else:
            if self.cache_size:  # the NGC image has its caches where tritonserver looks
                extra_args += response_cache_arguments(self.cache_size)
            self._container = f"triton-serving-lab-{os.getpid()}-{self.ports.http}"
            command = docker_command(
                repository,
                self.ports,
                tag=self.docker_tag,
                name=self._container,
                host=self.host,
                gpus=nvidia_gpu_present(),
                extra_args=extra_args,
            )
            subprocess.run(command, check=True, capture_output=True)
            self._spawn(["docker", "logs", "--follow", self._container], log_name)
        # Reap the process as soon as it exits: its Python stub processes watch it and exit
        # with it, but an unreaped (zombie) parent still looks alive to them.
        threading.Thread(target=_reap, args=(self.process,), daemon=True).start()

    def _ready(self) -> bool:
        if self._get("/v2/health/ready") != 200:
            return False
        # Metrics start last: a metrics port already taken stops the server after HTTP is up.
        if "--allow-metrics=false" in self.extra_args:
            return True
        with urllib.request.urlopen(self.metrics_url, timeout=2) as reply:
            return reply.status == 200

    # ----- addresses and clients
    @property
    def http_url(self) -> str:
        """``host:port`` of the HTTP/REST endpoint (what tritonclient.http expects)."""
        return f"{self.host}:{self._ports().http}"

    @property
    def grpc_url(self) -> str:
        """``host:port`` of the gRPC endpoint."""
        return f"{self.host}:{self._ports().grpc}"

    @property
    def metrics_url(self) -> str:
        """Full URL of the Prometheus metrics page."""
        return f"http://{self.host}:{self._ports().metrics}/metrics"

    def http_client(self, **kwargs: Any):
        """A ready ``tritonclient.http.InferenceServerClient`` for this server."""
        import tritonclient.http as httpclient

        client = httpclient.InferenceServerClient(self.http_url, **kwargs)
        self._clients.add(client)
        return client

    def grpc_client(self, **kwargs: Any):
        """A ready ``tritonclient.grpc.InferenceServerClient`` for this server."""
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(self.grpc_url, **kwargs)
        self._clients.add(client)
        return client

    # ----- model control
    def load_model(
        self, name: str, config: str | dict | None = None, files: dict[str, bytes] | None = None
    ) -> None:
        """Load (or reload) a model; ``config`` overrides its config.pbtxt (JSON or dict).

        Without ``config``, a model that is already loaded is reloaded with its config.pbtxt
        as it is on disk (Triton alone would keep an earlier override: its files did not change).
        """
        self._check_alive()
        missing = "" if files else missing_model_file(self.model_repository, name, config)
        if missing:
            raise ModelLoadError(f"model '{name}' cannot load: {missing}")
        if config is None and self.model_ready(name):
            from helpers.model_config import config_to_dict, read_config

            config = config_to_dict(read_config(Path(self.model_repository) / name))
        parameters = {path: base64.b64encode(data).decode() for path, data in (files or {}).items()}
        if config is not None:
            parameters["config"] = config if isinstance(config, str) else json.dumps(config)
        body = {"parameters": parameters} if parameters else {}
        status, text = self._post(f"/v2/repository/models/{name}/load", body)
        if status != 200:
            message = _error_text(text)
            if config is None:
                message += self._config_parse_error(name)
            raise ModelLoadError(
                f"model '{name}' failed to load: {message}" + self._log_excerpt(name)
            )

    def _config_parse_error(self, name: str) -> str:
        """Say where a config.pbtxt fails to parse (Triton only logs it, without the model name)."""
        from helpers.model_config import ConfigError, read_config

        try:
            read_config(Path(self.model_repository) / name)
        except (ConfigError, FileNotFoundError) as error:
            return f" ({error})"
        return ""

    def reload_model(self, name: str) -> None:
        """Unload ``name`` and load it from disk again: new instances, new stub processes.

        ``load_model`` on a loaded model whose files and config did not change keeps its
        instances; after a Python stub process died (requests fail with "Stub process ... is
        not healthy"), only unloading and loading again brings the model back. Triton never
        finishes unloading an instance whose stub is gone, so this does not wait for it: the
        new instances load beside the old ones, which Triton then drops.
        """
        self.unload_model(name, wait=False)
        self.load_model(name)

    def unload_model(self, name: str, wait: bool = True) -> None:
        """Unload a model; its instances finish in-flight requests, and this waits for them."""
        self._check_alive()
        status, text = self._post(f"/v2/repository/models/{name}/unload", {})
        if status != 200:
            raise ServerError(f"model '{name}' failed to unload: {_error_text(text)}")
        if wait:
            wait_until_unloaded(self, name)

    def model_ready(self, name: str, version: str = "") -> bool:
        """True when the model (or that version) is READY."""
        path = f"/v2/models/{name}" + (f"/versions/{version}" if version else "") + "/ready"
        return self._get(path) == 200

    def served_by(self, model: str) -> str:
        """Which backend serves ``model``, from its served config (notebooks 04, 05, 07).

        A Python-based backend (the course's stand-ins in the embedded server) reports a
        ``runtime`` of ``model.py``; Triton's native C++ backends do not.
        """
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/models/{model}/config", timeout=10) as reply:
                config = json.loads(reply.read())
        except OSError as error:
            raise ServerError(f"no config for model '{model}' at {self.http_url}: {error}") from error
        backend = config.get("backend") or config.get("platform", "")
        if config.get("runtime", "").endswith(".py"):
            return f"the course's Python stand-in for {backend} (inside Triton's Python backend)"
        return f"Triton's native {backend} backend"

    def repository_index(self) -> list[dict[str, Any]]:
        """The repository index: every model folder with its state (READY, UNAVAILABLE, ...)."""
        self._check_alive()
        status, text = self._post("/v2/repository/index", {})
        if status != 200:
            raise ServerError(f"repository index failed: {_error_text(text)}")
        return json.loads(text)

    # ----- HTTP plumbing
    def _ports(self) -> Ports:
        if self.ports is None:
            raise ServerError("the server has not been started")
        return self.ports

    def _check_alive(self) -> None:
        if self.process is None:
            raise ServerError("the server is not running: call start() first")
        if self.process.poll() is not None:
            raise ServerError(
                f"tritonserver is no longer running (exit code {self.process.returncode})"
                + self._log_excerpt()
            )

    def _get(self, path: str) -> int:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}{path}", timeout=2) as reply:
                return reply.status
        except urllib.error.HTTPError as error:
            return error.code
        except OSError:
            return 0

    def _post(self, path: str, body: dict[str, Any]) -> tuple[int, str]:
        request = urllib.request.Request(
            f"http://{self.http_url}{path}",
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json", CONTROL_HEADER: self._control_key},
        )
        try:
            with urllib.request.urlopen(request, timeout=600) as reply:
                return reply.status, reply.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(errors="replace")
        except OSError as error:
            self._check_alive()
            raise ServerError(f"no answer from {self.http_url}{path}: {error}") from error


def _stop(
    process: subprocess.Popen,
    container: str | None,
    workdir: Path | None,
    clients: weakref.WeakSet,
    grace_period: float = 10.0,
) -> int | None:
    """Stop what ``TritonServer._launch`` started: the container, the process, its files."""
    if container:
        subprocess.run(
            ["docker", "stop", "--time", str(int(grace_period)), container],
            capture_output=True,
            check=False,
        )
    # An open HTTP keep-alive connection makes Triton wait its whole exit timeout.
    for client in list(clients):
        with contextlib.suppress(Exception):
            client.close()
    code = terminate(process, grace_period)
    if workdir is not None:
        stop_stubs(workdir)
        shutil.rmtree(workdir, ignore_errors=True)
    return code


def remove_orphaned_workdirs(parent: str | Path | None = None) -> list[Path]:
    """Remove the work folders of servers whose owner was killed before it could; their paths.

    A server removes its folder when it stops, but a process killed with SIGKILL (a Jupyter
    kernel killed, a test that kills its parent) leaves it behind, 3 MB each. A folder goes
    only when the process named in its owner file is gone and no process's command line
    mentions it (a server or stub still running from it); one without an owner file is left.
    """
    parent = Path(parent or tempfile.gettempdir())
    folders = list(parent.glob(f"{WORKDIR_PREFIX}*"))
    if not folders:
        return []
    commands = "\n".join(
        " ".join(process.info["cmdline"] or []) for process in psutil.process_iter(["cmdline"])
    )
    removed = []
    for folder in folders:
        try:
            owner = int((folder / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # not a server's folder, or one still being made
        if is_alive(owner) or str(folder) + os.sep in commands:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def stop_stubs(workdir: Path, grace_period: float = 2.0) -> None:
    """Kill the Python stubs still running from ``workdir`` after their server stopped.

    Stubs exit with tritonserver when it shuts down, and normally soon after it dies, but
    some outlived a server killed with SIGKILL, left to init (they ignore SIGTERM). Each
    server's stub binary lies in its own ``workdir``, so they are found by their executable.
    """
    prefix = str(workdir.resolve()) + os.sep
    stubs = []
    for candidate in psutil.process_iter(["cmdline"]):
        command = candidate.info["cmdline"] or []
        if command and command[0].startswith(prefix):
            stubs.append(candidate)
    _, alive = psutil.wait_procs(stubs, timeout=grace_period)  # those still exiting
    for stub in alive:
        with contextlib.suppress(psutil.Error):
            stub.kill()
    psutil.wait_procs(alive, timeout=grace_period)


def _reap(process: subprocess.Popen) -> None:
    """Poll ``process`` until it exits, so that it is reaped at once (a daemon thread)."""
    while process.poll() is None:
        time.sleep(0.2)


def _error_text(body: str) -> str:
    with contextlib.suppress(ValueError, TypeError):
        return json.loads(body)["error"]
    return body.strip()
