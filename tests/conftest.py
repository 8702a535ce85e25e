"""Shared fixtures: system-package checks, a small model repository, running servers."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.tiny_models import build_tiny_repository

IN_CI = bool(os.environ.get("CI"))


def require_system(program: str, package: str) -> str:
    """Return the path of ``program``; skip with the install command when missing (fail in CI)."""
    path = shutil.which(program)
    if path is None:
        message = f"needs {program}: sudo apt-get install -y {package}"
        if IN_CI:
            pytest.fail(message + " (.ci/run installs it; nothing may skip in CI)")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def tiny_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository of small real models (ONNX + TorchScript) and broken ones."""
    return build_tiny_repository(tmp_path_factory.mktemp("repository"))


@pytest.fixture(scope="module")
def no_leftover_server_processes():
    """Fail the module if a server process it started outlives it (reliability tests)."""
    from tests.reliability_models import no_new_server_processes

    with no_new_server_processes():
        yield
