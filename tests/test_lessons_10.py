"""Notebook 10's copyable cells (clients through a proxy) where ``helpers`` cannot be imported.

Two real embedded Triton replicas serve the tiny ONNX model (same input name and layout as
YOLO11n: ``images`` [N, 3, H, W]) behind a real Envoy on loopback; the cells get the proxy's
URLs as the notebook's plumbing cell would give them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers.commands import format_command
from helpers.paths import REPO_ROOT
from helpers.proxy import EnvoyProxy, envoy_command
from helpers.scaling import model_successes
from tests.copyable import fenced_blocks, run_copyable
from tests.scaling_models import MODEL, scaling_repository, started_replicas, successes_since

NOTEBOOK = REPO_ROOT / "notebooks" / "10_scaling_out.ipynb"

pytestmark = pytest.mark.usefixtures("no_leftover_server_processes")


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory):
    repository = scaling_repository(tmp_path_factory.mktemp("lessons09") / "repository")
    with started_replicas(repository, MODEL) as servers:
        yield servers


def test_copyable_clients_go_through_the_proxy_to_both_replicas(replicas, tmp_path: Path):
    before = [model_successes(server, MODEL) for server in replicas]
    with EnvoyProxy(replicas) as proxy:
        proxy.wait_all_healthy()
        result = run_copyable(
            NOTEBOOK,
            tmp_path,
            provided={
                "TRITON_HTTP_URL": proxy.http_url,
                "TRITON_GRPC_URL": proxy.grpc_url,
                "MODEL_NAME": MODEL,
                "IMAGE_SIZE": 16,
                "REQUESTS_PER_PROTOCOL": 6,
            },
            names=["http_output", "grpc_output", "ready_status"],
        )
    http, grpc, ready, sent = result["shown"][-4:]
    assert http == {
        "requests": 6,
        "versions that answered": ["1"],
        "output shape": [1, 4],
        "all answers equal": True,
    }
    assert grpc == {"requests": 6, "same as HTTP": True}
    assert ready == 200
    assert sent == ["1", "1", "1"]  # make_sender's send(): the version that answered
    values = result["values"]
    assert np.array_equal(np.array(values["http_output"]), np.array(values["grpc_output"]))
    served = successes_since(replicas, MODEL, before, total=6 + 6 + 3)
    assert sum(served) == 6 + 6 + 3 and min(served) >= 6  # round robin: both replicas served


def test_the_envoy_command_shown_is_the_one_the_helper_runs():
    assert format_command(envoy_command("deploy/envoy/envoy.yaml")) in fenced_blocks(NOTEBOOK)


def test_the_helm_and_kubectl_lines_shown_match_deploy():
    import shlex

    from helpers.k8s import CHART, DEPLOY, PLAIN_MANIFESTS, RELEASE

    blocks = [b for b in fenced_blocks(NOTEBOOK) if "helm template" in b]
    assert len(blocks) == 1, "one block with the chart's helm and kubectl lines"
    lines = [shlex.split(line, comments=True) for line in blocks[0].splitlines() if line.strip()]
    template, apply_chart = lines[0], lines[1]
    # helm template <release> <chart> --namespace <ns> > <file>: what render_chart renders here
    assert template[:2] == ["helm", "template"]
    assert template[2] == RELEASE
    assert REPO_ROOT / template[3] == CHART and (CHART / "Chart.yaml").exists()
    assert template[4:6] == ["--namespace", "default"]
    assert template[6] == ">" and apply_chart == ["kubectl", "apply", "-f", template[7]]
    for words in lines:
        assert words[0] in {"helm", "kubectl"}, words
        for word in words:
            if word.startswith("deploy/"):
                assert (REPO_ROOT / word).exists(), word
    shown_files = {REPO_ROOT / w for words in lines for w in words if w.startswith("deploy/")}
    assert set(PLAIN_MANIFESTS) <= shown_files  # every manifest the notebook validates is applied
    assert DEPLOY / "prometheus-adapter" / "values.yaml" in shown_files
