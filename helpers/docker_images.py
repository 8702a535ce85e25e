"""The NGC Triton image with faster-whisper added, as commands (introduced in notebook 05).

The NGC ``tritonserver:<yy.mm>-py3`` image runs Python-backend models with its own Python, which
lacks faster-whisper; ``docker/faster-whisper/Dockerfile`` adds it. CTranslate2 (under
faster-whisper) is built for CUDA 12, so the Dockerfile starts from 25.03: the 25.08 image ships
CUDA 13 and CTranslate2 fails there. These builders return argument lists; notebook 05 shows them
with ``helpers.commands.format_command``.
"""

from __future__ import annotations

from collections.abc import Sequence

from helpers.paths import REPO_ROOT

#: The committed Dockerfile, relative to the repository root (where the commands run).
FASTER_WHISPER_DOCKERFILE = "docker/faster-whisper/Dockerfile"
#: The tag the course gives the image it builds.
FASTER_WHISPER_IMAGE = "triton-serving-lab/faster-whisper:25.03"
#: The models notebook 05 serves.
WHISPER_MODELS = ("faster_whisper_python", "faster_whisper_python_stream")


def dockerfile_text() -> str:
    """The committed Dockerfile for faster-whisper on the NGC image (notebook 05)."""
    return (REPO_ROOT / FASTER_WHISPER_DOCKERFILE).read_text()


def faster_whisper_build_command(tag: str = FASTER_WHISPER_IMAGE) -> list[str]:
    """``docker build`` of the faster-whisper image, run from the repository root (notebook 05)."""
    folder = FASTER_WHISPER_DOCKERFILE.rsplit("/", 1)[0]
    return ["docker", "build", "-t", tag, "-f", FASTER_WHISPER_DOCKERFILE, folder]


def faster_whisper_run_command(
    image: str = FASTER_WHISPER_IMAGE,
    model_repository: str = "./model_repository",
    gpus: bool = True,
    models: Sequence[str] = WHISPER_MODELS,
) -> list[str]:
    """``docker run`` of Triton serving the Whisper models from that image (notebook 05).

    Ports 8000-8002 are published on loopback only; ``./model_repository`` (a path relative
    to where it runs: Docker 23 or newer) is mounted read-only at ``/models``.
    """
    command = ["docker", "run", "--rm"]
    if gpus:
        command.append("--gpus=all")
    command += ["--shm-size=2g"]
    for port in (8000, 8001, 8002):
        command += ["-p", f"127.0.0.1:{port}:{port}"]
    command += ["-v", f"{model_repository}:/models:ro", image]
    command += ["tritonserver", "--model-repository=/models", "--model-control-mode=explicit"]
    return command + [f"--load-model={name}" for name in models]
