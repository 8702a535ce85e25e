"""Check a Triton model repository against Triton's naming rules (introduced in notebook 03).

Triton expects::

    <repository>/<model>/config.pbtxt
    <repository>/<model>/<version>/<model file>

``<model>`` is the name clients use (and ``name:`` in config.pbtxt must equal it),
``<version>`` is a positive integer (other folder names are ignored), and the model file is
named by the backend unless ``default_model_filename`` says otherwise: ``model.onnx``
(onnxruntime), ``model.pt`` (pytorch), ``model.plan`` (tensorrt), ``model.py`` (python).
"""

from __future__ import annotations

import json
import time
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pandas as pd

from helpers.model_config import ConfigError, ModelConfig, config_from_dict, read_config
from helpers.paths import MODEL_REPOSITORY, REPO_ROOT

#: Triton's default model file name per platform / backend.
DEFAULT_MODEL_FILES: dict[str, str] = {
    "onnxruntime_onnx": "model.onnx",
    "onnxruntime": "model.onnx",
    "pytorch_libtorch": "model.pt",
    "pytorch": "model.pt",
    "tensorrt_plan": "model.plan",
    "tensorrt": "model.plan",
    "python": "model.py",
}
#: Which notebook writes the model files that are not committed (model folder name patterns).
MODEL_FILE_CREATORS: tuple[tuple[str, str], ...] = (
    ("yolo11*_onnx", "notebook 01 (01_onnx_export_and_inspection)"),
    ("yolo11*_torchscript", "notebook 01 (01_onnx_export_and_inspection)"),
    ("yolo11*_onnx_ortopt", "notebook 02 (02_tensorrt_engine_builds)"),
    ("yolo11*_onnx_int8", "notebook 02 (02_tensorrt_engine_builds)"),
    ("yolo11*_trt", "notebook 02 (02_tensorrt_engine_builds)"),
)


def model_filename(config: ModelConfig) -> str:
    """The file Triton loads from each version folder of this model (notebook 03)."""
    if config.default_model_filename:
        return config.default_model_filename
    return DEFAULT_MODEL_FILES.get(config.backend or config.platform, "?")


def version_folders(folder: Path) -> list[Path]:
    """The version folders Triton considers (positive integers), oldest first (notebook 03)."""
    return sorted(
        (p for p in folder.iterdir() if p.is_dir() and p.name.isdigit() and int(p.name) > 0),
        key=lambda p: int(p.name),
    )


def missing_model_file(repository: str | Path, name: str, config: str | dict | None = None) -> str:
    """Say which model file is missing for ``name`` and which notebook creates it ("" if none).

    The course's one "is the model file there?" check (``TritonServer.load_model`` and
    ``helpers.measure.missing_reason`` ask it). Looks in the version folders the config's
    version policy loads (by default the latest) for the file its backend expects;
    ``config`` overrides config.pbtxt as in ``TritonServer.load_model``. Anything it cannot
    judge is left to Triton's own error.
    """
    folder = Path(repository) / name
    if not folder.is_dir():
        return ""
    try:
        if config is None:
            parsed = read_config(folder)
        else:
            parsed = config_from_dict(json.loads(config) if isinstance(config, str) else config)
    except (ConfigError, OSError, ValueError, TypeError, KeyError):
        return ""
    filename = model_filename(parsed)
    if filename == "?":
        return ""
    versions = version_folders(folder)
    policy = parsed.version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "specific":
        wanted = [folder / str(version) for version in policy.specific.versions]
    elif choice == "all":
        wanted = versions
    else:
        wanted = versions[-max(policy.latest.num_versions, 1) :]
    missing = [v / filename for v in wanted or [folder / "1"] if not (v / filename).exists()]
    if not missing:
        return ""
    resolved = missing[0].resolve()
    shown = resolved.relative_to(REPO_ROOT) if resolved.is_relative_to(REPO_ROOT) else resolved
    creators = [notebook for pattern, notebook in MODEL_FILE_CREATORS if fnmatch(name, pattern)]
    hint = f"{creators[0]} creates it" if creators else "no notebook of the course creates it"
    return f"{shown} is missing: {hint}"


def repository_layout(root: str | Path = MODEL_REPOSITORY) -> pd.DataFrame:
    """One row per model version folder: backend, expected file, whether it is there (notebook 03).

    ``problem`` says what Triton would refuse or skip; empty means the folder is loadable as
    far as names and files go.
    """
    rows = []
    for folder in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        if folder.name.startswith((".", "__")):
            continue
        base = {"model": folder.name, "backend": "", "version": "", "file": "", "MiB": None}
        try:
            config = read_config(folder)
        except (ConfigError, FileNotFoundError) as error:
            rows.append({**base, "problem": str(error)})
            continue
        base["backend"] = config.backend or config.platform
        expected = model_filename(config)
        name_problem = (
            f"config name '{config.name}' differs from the folder name"
            if config.name and config.name != folder.name
            else ""
        )
        versions = version_folders(folder)
        if not versions:
            rows.append(
                {
                    **base,
                    "problem": name_problem
                    or "no version folder (1/, 2/, ...): nothing to load yet",
                }
            )
        for version in versions:
            path = version / expected
            rows.append(
                {
                    **base,
                    "version": version.name,
                    "file": expected,
                    "MiB": round(path.stat().st_size / 2**20, 2) if path.exists() else None,
                    "problem": name_problem
                    or ("" if path.exists() else f"{expected} missing (not exported yet?)"),
                }
            )
    return pd.DataFrame(rows, columns=["model", "backend", "version", "file", "MiB", "problem"])


def config_table(file_config: ModelConfig, loaded_config: ModelConfig) -> pd.DataFrame:
    """Top-level config fields: as written in config.pbtxt and as Triton loaded them (notebook 03).

    ``filled in by Triton`` marks what the server (and the backend's auto-complete) added or
    changed: defaults such as ``version_policy`` or ``default_model_filename``, and anything
    the model file itself says.
    """
    from helpers.model_config import config_to_dict

    written, loaded = config_to_dict(file_config), config_to_dict(loaded_config)

    def show(value: object) -> str:
        text = json.dumps(value, separators=(", ", ": "))
        return text if len(text) <= 90 else text[:87] + "..."

    rows = [
        {
            "field": key,
            "config.pbtxt": show(written[key]) if key in written else "",
            "loaded by Triton": show(loaded[key]),
            "filled in by Triton": written.get(key) != loaded[key],
        }
        for key in loaded
    ]
    return pd.DataFrame(rows).set_index("field")


def wait_until_unloaded(server: Any, name: str, timeout: float = 60.0) -> float:
    """Wait until no version of ``name`` is READY or UNLOADING; the seconds waited (notebook 04).

    An unload request (tritonclient's ``unload_model``) returns while the model's instances
    may still be finishing their requests; the repository index says when they are gone.
    ``server`` is a ``TritonServer`` (its ``repository_index``); ``unload_model`` waits with this.
    """
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        states = [e.get("state") for e in server.repository_index() if e["name"] == name]
        if not {"READY", "UNLOADING"} & set(states):
            return round(time.monotonic() - started, 2)
        time.sleep(0.1)
    raise TimeoutError(f"model '{name}' was still unloading after {timeout:.0f} s")
