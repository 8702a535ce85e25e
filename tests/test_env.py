"""The environment report tells the truth about this machine (checked by independent probes)."""

from __future__ import annotations

import os
import shutil
import subprocess

import psutil
import pytest

from helpers import machine, results, server
from helpers.env import environment_report
from helpers.machine import glibc_version


@pytest.fixture(scope="module")
def report():
    return environment_report(start_server=True)


@pytest.fixture(scope="module")
def lines(report):
    """The report's checks by name."""
    return {check.name: check for check in report.checks}


def _docker_engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    result = subprocess.run(["docker", "info"], capture_output=True, timeout=20, check=False)
    return result.returncode == 0


def _gpu_listed() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    result = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
    return result.returncode == 0 and "GPU" in result.stdout


def test_gpu_line_matches_nvidia_smi(report, lines):
    assert lines["NVIDIA GPU"].ok == _gpu_listed() == report.gpu


def test_docker_line_matches_docker_info(lines):
    assert lines["Docker engine"].ok == _docker_engine_answers()


def test_glibc_and_hardware_are_this_machines(lines):
    assert lines["glibc"].found == os.confstr("CS_GNU_LIBC_VERSION").split()[1]
    assert f"{os.cpu_count()} cores" in lines["CPU and memory"].found
    gib = psutil.virtual_memory().total / 2**30
    assert f"{gib:.1f} GiB" in lines["CPU and memory"].found


def test_embedded_server_really_started_and_is_the_chosen_launcher(report, lines):
    line = lines["embedded tritonserver"]
    assert line.ok, line.found
    assert line.found.startswith("Triton 2.")
    assert report.server_mode == "embedded"


def test_perf_analyzer_decision_follows_glibc(report, lines):
    line = lines["perf_analyzer"]
    if glibc_version() < (2, 38) and shutil.which("perf_analyzer") is None:
        assert not line.ok
        assert "2.38" in line.found
        assert report.load_tool == "fallback generator"
    else:
        assert report.load_tool == ("perf_analyzer" if line.ok else "fallback generator")


def test_missing_lines_say_what_they_cost_and_how_to_get_them(report):
    for line in report.checks:
        if not line.ok:
            assert line.impact and line.fix, line.name


def test_table_has_one_row_per_check(report):
    frame = report.frame()
    assert list(frame.index) == [c.name for c in report.checks]
    assert set(frame["status"]) <= {"OK", "missing"}


def test_machine_facts_list_every_gpu_nvidia_smi_lists(tmp_path, monkeypatch):
    smi = tmp_path / "nvidia-smi"
    smi.write_text(
        "#!/bin/sh\n"
        'echo "NVIDIA H200, 9.0, 580.65.06, 143771"\n'
        'echo "NVIDIA H200, 9.0, 580.65.06, 143771"\n'
    )
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    h200 = machine.GpuInfo("NVIDIA H200", "9.0", "580.65.06", 143771)
    assert machine.gpus() == [h200, h200]
    assert machine.detect_gpu() == h200 and machine.nvidia_gpu_present()
    assert machine.gpu_names() == "NVIDIA H200 + NVIDIA H200"
    assert results.gpu_names is machine.gpu_names  # one detector, read everywhere
    assert server.nvidia_gpu_present is machine.nvidia_gpu_present


def test_machine_facts_without_a_gpu(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi
    monkeypatch.setattr(machine, "_torch_capability", lambda: None)  # and torch sees no CUDA
    assert machine.gpus() == [] and machine.detect_gpu() is None
    assert not machine.nvidia_gpu_present() and machine.gpu_names() == "none"
    facts = machine.machine_facts()
    assert (facts["device"], facts["driver"]) == ("none", "none")
    assert set(facts) == {"device", "cpu", "driver", "cuda", "torch", "python", "os"}
    assert facts["cpu"].endswith(" cores")
