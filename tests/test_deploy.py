"""deploy/ renders with Helm's library and validates strictly against a current Kubernetes.

No cluster: the chart is rendered offline (helm-python-sdk) and every object is checked
against the JSON schemas of the newest Kubernetes release kubernetes-validate ships, in strict
mode. Custom resources without a shipped schema are printed as unvalidated.
"""

from __future__ import annotations

import copy
import importlib.util
import subprocess

import pytest
import yaml

from helpers.k8s import (
    DEPLOY,
    load_manifests,
    render_chart,
    validate_object,
    validate_objects,
)
from helpers.proxy import ENVOY_CONFIG, find_envoy
from tests.conftest import IN_CI

for module, package in (
    ("helm_python", "helm-python-sdk"),
    ("kubernetes_validate", "kubernetes-validate"),
):
    if importlib.util.find_spec(module) is None:
        message = f"needs {package}: pip install -e '.[k8s]'"
        if IN_CI:
            pytest.fail(message + " (make test installs it)", pytrace=False)
        pytest.skip(message, allow_module_level=True)

#: What Triton's own k8s-onprem chart renders for its autoscaler (API removed in 1.26).
V2BETA2_HPA = {
    "apiVersion": "autoscaling/v2beta2",
    "kind": "HorizontalPodAutoscaler",
    "metadata": {"name": "triton-hpa"},
    "spec": {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "triton"},
        "minReplicas": 1,
        "maxReplicas": 3,
        "metrics": [
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": "avg_time_queue_us"},
                    "target": {"type": "AverageValue", "averageValue": "50"},
                },
            }
        ],
    },
}


@pytest.fixture(scope="module")
def objects() -> dict[str, dict]:
    return {obj["kind"]: obj for obj in render_chart()}


def test_every_object_renders_and_validates_strictly(objects):
    everything = list(objects.values()) + load_manifests()
    rows = validate_objects(everything)
    for row in rows:
        print(f"{row['status']:12} {row['kind']:24} {row['apiVersion']:28} {row['detail']}")
    status = {row["kind"]: row["status"] for row in rows}
    assert status == {
        "Deployment": "valid",
        "Service": "valid",
        "HorizontalPodAutoscaler": "valid",
        "ServiceMonitor": "unvalidated",  # custom resources: listed, never counted as valid
        "InferenceService": "unvalidated",
    }
    major, minor = map(int, rows[0]["kubernetes"].split(".")[:2])
    assert (major, minor) >= (1, 30)  # a current release, strict schemas


def test_a_removed_api_version_and_an_unknown_field_fail():
    status, detail = validate_object(V2BETA2_HPA, "1.37")
    assert status == "removed" and "autoscaling/v2beta2" in detail
    # 1.25 still served it: the same object was valid there
    assert validate_object(V2BETA2_HPA, "1.25")[0] == "valid"
    typo = copy.deepcopy(V2BETA2_HPA) | {"apiVersion": "autoscaling/v2"}
    typo["spec"]["minReplica"] = typo["spec"].pop("minReplicas")
    assert validate_object(typo, "1.37")[0] == "invalid"


def test_the_deployment_probes_triton_and_asks_for_the_gpu(objects):
    container = objects["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"] == "/v2/health/ready"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300  # slow model loads
    assert "--strict-readiness=true" in container["args"]
    assert "--load-model=yolo11n_onnx" in container["args"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    cpu_only = render_chart(values={"resources": {"gpu": 0}})
    deployment = next(o for o in cpu_only if o["kind"] == "Deployment")
    limits = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert "nvidia.com/gpu" not in limits
    assert validate_objects([deployment])[0]["status"] == "valid"


def test_service_exposes_http_grpc_and_metrics(objects):
    ports = {p["name"]: p for p in objects["Service"]["spec"]["ports"]}
    assert {name: p["port"] for name, p in ports.items()} == {
        "http": 8000,
        "grpc": 8001,
        "metrics": 8002,
    }
    assert ports["grpc"]["appProtocol"] == "kubernetes.io/h2c"
    monitor = objects["ServiceMonitor"]["spec"]
    assert monitor["endpoints"][0]["port"] == "metrics"


def test_the_autoscaler_uses_the_adapter_rule_that_sums_over_models(objects):
    values = yaml.safe_load((DEPLOY / "helm" / "triton" / "values.yaml").read_text())
    hpa = objects["HorizontalPodAutoscaler"]
    metric = hpa["spec"]["metrics"][0]["pods"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert metric["metric"]["name"] == values["autoscaling"]["metricName"]
    assert (
        float(metric["target"]["averageValue"]) == values["autoscaling"]["targetQueueMsPerRequest"]
    )
    adapter = yaml.safe_load((DEPLOY / "prometheus-adapter" / "values.yaml").read_text())
    rule = adapter["rules"]["custom"][0]
    assert rule["name"]["as"] == values["autoscaling"]["metricName"]
    query = " ".join(rule["metricsQuery"].split())
    # ratio of sums per pod (server#8979 is an average of per-model ratios)
    assert query.startswith("sum(delta(nv_inference_queue_duration_us{")
    assert "/ clamp_min(sum(delta(nv_inference_request_success{" in query
    assert "avg(" not in query


def test_the_kserve_service_uses_the_triton_runtime():
    (service,) = load_manifests()
    model = service["spec"]["predictor"]["model"]
    assert model["runtime"] == "kserve-tritonserver"
    assert model["protocolVersion"] == "v2"
    assert "--strict-readiness=true" in model["args"]


def test_the_committed_envoy_config_is_valid_for_envoy():
    result = subprocess.run(
        [str(find_envoy()), "--mode", "validate", "--config-path", str(ENVOY_CONFIG)]
        + ["--disable-hot-restart", "--log-level", "error"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout
