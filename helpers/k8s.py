"""Render the course's Kubernetes manifests offline and validate them (notebook 10).

No cluster runs here. ``render_chart`` renders ``deploy/helm/triton`` with Helm's own library
(the ``helm-python-sdk`` wheel, no helm binary); ``validate_objects`` checks every object
against the JSON schemas of one Kubernetes release (``kubernetes-validate``), strictly: an
unknown field fails, and so does an API version that release does not serve (removed, like
``autoscaling/v2beta2`` in 1.26). Custom resources (ServiceMonitor, InferenceService) have no
schema in that package: they are reported as unvalidated, never as valid.

Both packages are large and optional: ``pip install -e '.[k8s]'`` (``make test`` has them).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from helpers.paths import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
CHART = DEPLOY / "helm" / "triton"
#: The Helm release name the chart is rendered under (``helm template lab deploy/helm/triton``).
RELEASE = "lab"
#: The plain manifests beside the chart (KServe).
PLAIN_MANIFESTS = [DEPLOY / "kserve" / "inferenceservice.yaml"]


def render_chart(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The objects Helm renders from the course's chart with ``values`` (offline, notebook 10)."""
    import helm_python as helm

    manifests = helm.Chart.load(str(CHART)).render(
        values or {}, name=RELEASE, namespace="default", is_install=True
    )
    objects = []
    for path in sorted(manifests):
        objects += [doc for doc in yaml.safe_load_all(manifests[path]) if doc]
    return objects


def load_manifests(paths: Iterable[Path] = PLAIN_MANIFESTS) -> list[dict[str, Any]]:
    """The objects of plain YAML manifest files."""
    objects = []
    for path in paths:
        objects += [doc for doc in yaml.safe_load_all(Path(path).read_text()) if doc]
    return objects


def is_builtin_api(api_version: str) -> bool:
    """True for Kubernetes' own API groups (``v1``, ``apps/v1``, ``*.k8s.io/...``)."""
    if "/" not in api_version:
        return True
    group = api_version.split("/")[0]
    return "." not in group or group.endswith(".k8s.io")


def validate_object(obj: dict[str, Any], version: str) -> tuple[str, str]:
    """``(status, detail)``: ``valid``, ``invalid``, ``removed`` or ``unvalidated``."""
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError

    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        path = ".".join(str(p) for p in error.path)
        return "invalid", f"{path}: {error.message}"
    except SchemaNotFoundError:
        if is_builtin_api(obj["apiVersion"]):
            return "removed", f"Kubernetes {version} serves no {obj['apiVersion']} {obj['kind']}"
        return "unvalidated", "custom resource: no schema shipped for it"
    return "valid", ""


def validate_objects(objects: Iterable[dict[str, Any]], version: str | None = None) -> list[dict]:
    """Rows of kind, name, apiVersion, status, detail; default: the newest release (notebook 10)."""
    import kubernetes_validate

    version = version or kubernetes_validate.latest_version()
    rows = []
    for obj in objects:
        status, detail = validate_object(obj, version)
        rows.append(
            {
                "kind": obj.get("kind"),
                "name": obj.get("metadata", {}).get("name"),
                "apiVersion": obj.get("apiVersion"),
                "kubernetes": version,
                "status": status,
                "detail": detail,
            }
        )
    return rows
