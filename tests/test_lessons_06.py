"""Notebook 06's lessons: the Whisper request over HTTP and gRPC and the streaming client, run
against a real server where ``helpers`` cannot be imported; the Dockerfile and docker commands
shown as text equal to the committed file and the builders' output.

The checks the notebook's cells used to assert live in ``tests/test_whisper.py``, against the
same models: one ``model.py`` for both folders, gRPC gives the HTTP transcript, a bad file fails
alone in a dynamic batch, streamed segments equal the one-shot answer, served equals in-process,
the throughput loop counts every request, ``LANGUAGE="zh"`` reaches a multilingual model."""

from __future__ import annotations

import json

import pytest

from helpers import speech
from helpers.commands import format_command
from helpers.lessons.whisper import (
    MULTILINGUAL_HOWTO,
    ModelCheck,
    multilingual_model,
    transcribe,
)
from helpers.paths import REPO_ROOT
from helpers.server import TritonServer
from helpers.speech import load_samples, word_error_rate
from tests.copyable import fenced_blocks, run_copyable

NOTEBOOK = REPO_ROOT / "notebooks" / "06_faster_whisper_python_backend.ipynb"
SAMPLE = load_samples()[0]
#: The committed Dockerfile that adds faster-whisper to the NGC Triton image, and its tag.
DOCKERFILE = "docker/faster-whisper/Dockerfile"
IMAGE = "triton-serving-lab/faster-whisper:25.03"


def dockerfile_text() -> str:
    return (REPO_ROOT / DOCKERFILE).read_text()


def faster_whisper_build_command() -> list[str]:
    """``docker build`` of the faster-whisper image, run from the repository root."""
    return ["docker", "build", "-t", IMAGE, "-f", DOCKERFILE, DOCKERFILE.rsplit("/", 1)[0]]


def faster_whisper_run_command(gpus: bool = True) -> list[str]:
    """``docker run`` of Triton serving the Whisper models from that image.

    Ports 8000-8002 are published on loopback only; ``./model_repository`` (a path relative
    to where it runs: Docker 23 or newer) is mounted read-only at ``/models``.
    """
    command = ["docker", "run", "--rm", *(["--gpus=all"] if gpus else []), "--shm-size=2g"]
    for port in (8000, 8001, 8002):
        command += ["-p", f"127.0.0.1:{port}:{port}"]
    command += ["-v", "./model_repository:/models:ro", IMAGE]
    command += ["tritonserver", "--model-repository=/models", "--model-control-mode=explicit"]
    return command + [f"--load-model={speech.MODEL_NAME}", f"--load-model={speech.STREAM_MODEL_NAME}"]


def test_dockerfile_and_commands_shown_are_the_committed_file_and_the_builders() -> None:
    assert dockerfile_text().rstrip("\n") in fenced_blocks(NOTEBOOK, "dockerfile")
    blocks = fenced_blocks(NOTEBOOK)
    assert format_command(faster_whisper_build_command()) in blocks
    assert format_command(faster_whisper_run_command()) in blocks
    assert "FROM nvcr.io/nvidia/tritonserver:25.03-py3" in dockerfile_text()  # CUDA 12


def test_the_run_command_serves_both_models_on_loopback_read_only() -> None:
    command = faster_whisper_run_command(gpus=False)
    assert "--gpus=all" not in command and "--gpus=all" in faster_whisper_run_command()
    assert "./model_repository:/models:ro" in command
    published = [command[i + 1] for i, part in enumerate(command) if part == "-p"]
    assert published == [f"127.0.0.1:{port}:{port}" for port in (8000, 8001, 8002)]
    assert command[-2:] == [f"--load-model={speech.MODEL_NAME}", f"--load-model={speech.STREAM_MODEL_NAME}"]


@pytest.fixture(scope="module")
def server():
    with TritonServer(models=[speech.MODEL_NAME, speech.STREAM_MODEL_NAME]) as running:
        yield running


def test_transcribe_and_stream_by_hand(server, tmp_path) -> None:
    with server.http_client() as client:
        expected = transcribe(client, SAMPLE.read_bytes(), beam_size=5).text
    assert word_error_rate(SAMPLE.text, expected) < 0.2, expected
    result = run_copyable(
        NOTEBOOK,
        tmp_path,
        provided={
            "TRITON_HTTP_URL": server.http_url,
            "TRITON_GRPC_URL": server.grpc_url,
            "AUDIO_PATH": str(SAMPLE.path),
            "BEAM_SIZE": 5,
        },
        names=["over_http", "over_grpc", "streamed_short"],
    )
    values = result["values"]
    # the cells' Transcript has no JSON form: its repr carries the text
    assert f"text={expected!r}" in values["over_http"]
    assert values["over_grpc"] == values["over_http"]
    streamed = values["streamed_short"]
    assert streamed, "the stream sent no segment"
    assert all(arrived > 0 for arrived, _ in streamed)
    assert "".join(segment["text"] for _, segment in streamed).strip() == expected


# --------------------------------------------------------------------------- Mandarin (section 10)
def offline(name: str) -> str:
    """faster-whisper's download_model with no network and an empty Hugging Face cache."""
    raise OSError(f"cannot reach the Hub for {name}\nsecond line")


def test_an_english_only_model_is_not_taken_for_a_multilingual_one(tmp_path) -> None:
    for check in (
        multilingual_model("tiny.en", download=offline),
        multilingual_model(speech.local_model_path("tiny.en")),  # the folder, asked of CTranslate2
    ):
        assert check.path is None
        assert "English-only" in check.reason and MULTILINGUAL_HOWTO in check.reason
    not_a_model = multilingual_model(str(tmp_path))
    assert not_a_model.path is None and "not a CTranslate2 Whisper model" in not_a_model.reason


def test_offline_the_reason_says_what_is_missing_and_how_to_get_it() -> None:
    check = multilingual_model("tiny", download=offline)
    assert check.path is None
    assert check.reason.startswith(
        "'tiny' is neither in the Hugging Face cache nor downloadable here "
        "(OSError: cannot reach the Hub for tiny). "
    )
    for needed in ("tiny.en", "English-only", "Hugging Face", "ZH_MODEL", "folder"):
        assert needed in check.reason


def test_the_mandarin_cell_prints_why_it_is_skipped(capsys) -> None:
    cells = {c["id"]: "".join(c["source"]) for c in json.loads(NOTEBOOK.read_text())["cells"]}
    reason = multilingual_model("tiny", download=offline).reason
    exec(cells["7a3c5e28"], {"zh_audio": b"RIFF", "zh_model": ModelCheck(None, reason)})
    assert capsys.readouterr().out == f"skipped: {reason}\n"
    exec(cells["7a3c5e28"], {"zh_audio": None, "zh_model": ModelCheck(None, reason)})
    assert "espeak-ng is not installed" in capsys.readouterr().out
