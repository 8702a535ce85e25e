"""Model repositories for the reliability tests (tests/test_reliability_*.py).

YOLO11n is exported once per test session (random weights offline), or taken from
``model_repository`` when notebook 01 exported it there; each test module then builds its
own temporary repository from copies, so a test that corrupts a file never touches the
course's repository.
"""

from __future__ import annotations

import contextlib
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.paths import MODEL_REPOSITORY
from helpers.processes import course_processes, wait_until_gone

#: Where notebook 01 exports YOLO11n; used when both files are there.
NOTEBOOK_01_FILES: dict[str, Path] = {
    "onnx": MODEL_REPOSITORY / "yolo11n_onnx" / "1" / "model.onnx",
    "torchscript": MODEL_REPOSITORY / "yolo11n_torchscript" / "1" / "model.pt",
}
#: The files the tests use, by format, for the whole test session.
_EXPORTED: dict[str, Path] = {}


def yolo11n_files(factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{"onnx": model.onnx, "torchscript": model.pt}`` of YOLO11n (dynamic batch and size)."""
    if not _EXPORTED:
        if all(path.is_file() for path in NOTEBOOK_01_FILES.values()):
            _EXPORTED.update(NOTEBOOK_01_FILES)
        else:
            from helpers.export import export_onnx, export_torchscript
            from helpers.yolo import RandomWeightsWarning, load_yolo

            root = factory.mktemp("yolo11n_export")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RandomWeightsWarning)
                loaded = load_yolo("n")
            _EXPORTED["onnx"] = export_onnx(loaded, root).path
            _EXPORTED["torchscript"] = export_torchscript(loaded, root).path
    return dict(_EXPORTED)


def add_model(
    repository: Path,
    name: str,
    committed: str,
    model_file: Path | None = None,
    config: str | None = None,
) -> Path:
    """Add ``name`` to ``repository``: the committed folder's config (renamed) and a model file.

    ``committed`` is a folder of ``model_repository``; its config.pbtxt is copied with
    ``name`` in place of its own name unless ``config`` gives the text. ``model_file`` is
    copied into ``1/`` under the name Triton expects (committed ``1/model.py`` files are
    copied too). Returns the new model folder.
    """
    source = MODEL_REPOSITORY / committed
    folder = repository / name
    (folder / "1").mkdir(parents=True)
    text = config if config is not None else (source / "config.pbtxt").read_text()
    (folder / "config.pbtxt").write_text(text.replace(f'name: "{committed}"', f'name: "{name}"'))
    if model_file is not None:
        target = {".onnx": "model.onnx", ".pt": "model.pt"}[model_file.suffix]
        shutil.copyfile(model_file, folder / "1" / target)
    if (source / "1" / "model.py").is_file():
        shutil.copyfile(source / "1" / "model.py", folder / "1" / "model.py")
    return folder


def success_count(server, model: str, at_least: int = 0) -> int:
    """Requests ``server`` has answered successfully for ``model``, once at least ``at_least``
    are counted (Triton counts a request a moment after its answer has gone out)."""
    from helpers.statistics import settled_stats

    with server.http_client() as client:
        return settled_stats(client, model, at_least).success_count


#: The committed folders of notebook 08's pipelines (Python and ensemble: no model file to add).
PIPELINE_MODELS = ["yolo11n_preprocess", "yolo11n_postprocess", "yolo11n_pipeline", "yolo11n_bls"]


def pipeline_repository(factory: pytest.TempPathFactory) -> Path:
    """A repository with YOLO11n (ONNX and TorchScript) and notebook 08's pipeline models."""
    files = yolo11n_files(factory)
    root = factory.mktemp("pipeline_repository")
    add_model(root, "yolo11n_onnx", "yolo11n_onnx", files["onnx"])
    add_model(root, "yolo11n_torchscript", "yolo11n_torchscript", files["torchscript"])
    for name in PIPELINE_MODELS:
        shutil.copytree(
            MODEL_REPOSITORY / name, root / name, ignore=shutil.ignore_patterns("__pycache__")
        )
    return root


@contextlib.contextmanager
def no_new_server_processes(timeout: float = 15.0) -> Iterator[None]:
    """Fail if a server process (tritonserver, stub, netron, uvicorn) started inside outlives it.

    Checked by process id: every such process below this one that was not running before
    must be gone (or a zombie) within ``timeout`` seconds of the end of the block.
    """
    before = {process.pid for process in course_processes()}
    yield
    started = [process for process in course_processes() if process.pid not in before]
    left = wait_until_gone([process.pid for process in started], timeout)
    assert left == [], f"server processes outlived their test module: {left}"
