"""Export YOLO11 to ONNX and TorchScript into the Triton model repository (introduced in notebook 01).

Files land at ``model_repository/<name>/1/model.onnx`` and ``.../1/model.pt``, where
``<name>`` is ``yolo11<size>_onnx`` / ``yolo11<size>_torchscript`` (``yolo11n_onnx`` for the
default nano model, the name the committed ``config.pbtxt`` files and later notebooks use).

A file a person put there by hand is never overwritten silently. Each export writes a
sidecar ``model.onnx.export.json`` holding the sha256 of the file it wrote. On the next run:

- no file yet: write it ("created");
- a file whose sha256 matches the sidecar (our previous export): replace it ("replaced");
- any other file: keep it, write the new export under ``build/exports/`` instead and say so
  ("kept"), unless ``overwrite=True`` ("overwrote", naming the sha256 of what was replaced).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Literal
from unittest import mock

import numpy as np

from helpers.paths import MODEL_REPOSITORY, build_dir
from helpers.yolo import INPUT_SIZE, LoadedYolo, torch_forward

#: The ONNX opset the course exports with. 17 runs on onnxruntime >= 1.13 (Triton 23.x and
#: later), TensorRT >= 8.6 and every CPU/GPU execution provider without falling back.
DEFAULT_OPSET: int = 17
#: File name Triton expects per backend (the default ``default_model_filename``).
MODEL_FILENAMES: dict[str, str] = {"onnx": "model.onnx", "torchscript": "model.pt"}

#: Parity tolerance between runtimes, per element: |other - pytorch| <= ATOL + RTOL * |pytorch|
#: (notebook 01's parity table, ``np.allclose``).
#: Boxes are in pixels (0-640) and scores in [0, 1]; float32 kernels that differ in summation
#: order (and BatchNorm folded into the convolutions for the exports) stay far inside it.
PARITY_ATOL: float = 1e-3
PARITY_RTOL: float = 1e-3

Action = Literal["created", "replaced", "kept", "overwrote"]


@dataclass(frozen=True)
class ExportResult:
    """What an export did and where the file is (introduced in notebook 01)."""

    format: str
    path: Path  # the file this export wrote (the target, or build/exports/... when kept)
    target: Path  # where Triton looks: model_repository/<name>/1/model.onnx|model.pt
    action: Action
    message: str
    seconds: float


def triton_model_name(size: str = "n", fmt: str = "onnx") -> str:
    """``yolo11n_onnx``, ``yolo11s_torchscript``, ...: the model's folder name (notebook 01)."""
    if fmt not in MODEL_FILENAMES:
        raise ValueError(f"format must be one of {sorted(MODEL_FILENAMES)}, got {fmt!r}")
    return f"yolo11{size}_{fmt}"


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file (introduced in notebook 01)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def sidecar_path(target: str | os.PathLike[str]) -> Path:
    """``.../model.onnx`` -> ``.../model.onnx.export.json`` (introduced in notebook 01)."""
    target = Path(target)
    return target.with_name(target.name + ".export.json")


def place_file(
    new_file: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    metadata: dict[str, object] | None = None,
    fallback_dir: str | os.PathLike[str] | None = None,
) -> tuple[Path, Action, str]:
    """Move ``new_file`` to ``target`` unless that would silently replace someone's file (notebook 01).

    Returns ``(where the new file now is, action, message)`` by the rules above; when ``target``
    is kept, the new file and its sidecar go to ``fallback_dir`` (default
    ``build/exports/<model>/<version>/``).
    """
    new_file, target = Path(new_file), Path(target)
    destination = target
    action: Action
    if not target.exists():
        action, message = "created", f"created {target}"
    else:
        old_digest = sha256_file(target)
        if _read_sidecar(target).get("sha256") == old_digest:
            action = "replaced"
            message = f"replaced {target} (our previous export, sha256 {old_digest[:12]})"
        elif overwrite:
            action = "overwrote"
            message = (
                f"overwrote {target}: it was NOT written by this helper (sha256 {old_digest[:12]}); "
                "overwrite=True was given"
            )
        else:
            folder = fallback_dir or build_dir("exports", *target.parts[-3:-1])
            action, destination = "kept", Path(folder) / target.name
            message = (
                f"kept {target}: it was not written by this helper (sha256 {old_digest[:12]}), "
                f"so the new export went to {destination}. Pass overwrite=True to replace it."
            )
    _move(new_file, destination, metadata)
    return destination, action, message


def export_onnx(
    loaded: LoadedYolo,
    repository: str | os.PathLike[str] = MODEL_REPOSITORY,
    *,
    opset: int = DEFAULT_OPSET,
    overwrite: bool = False,
    fallback_dir: str | os.PathLike[str] | None = None,
) -> ExportResult:
    """Export to ONNX: dynamic batch, ``opset``, simplified, into the repository (notebook 01).

    Uses Ultralytics' exporter (``format="onnx", dynamic=True, simplify=True``): input
    ``images`` ``[batch, 3, height, width]``, output ``output0`` ``[batch, 84, anchors]``.
    Height and width are symbolic as well; the Triton config pins them to 640.
    """
    return _export(loaded, "onnx", repository, overwrite, fallback_dir, opset)


def export_torchscript(
    loaded: LoadedYolo,
    repository: str | os.PathLike[str] = MODEL_REPOSITORY,
    *,
    overwrite: bool = False,
    fallback_dir: str | os.PathLike[str] | None = None,
) -> ExportResult:
    """Export to TorchScript (traced at 640x640; any batch size) into the repository (notebook 01)."""
    return _export(loaded, "torchscript", repository, overwrite, fallback_dir)


def _export(
    loaded: LoadedYolo,
    fmt: str,
    repository: str | os.PathLike[str],
    overwrite: bool,
    fallback_dir: str | os.PathLike[str] | None,
    opset: int | None = None,
) -> ExportResult:
    name = triton_model_name(loaded.size, fmt)
    target = Path(repository) / name / "1" / MODEL_FILENAMES[fmt]
    args = {"format": fmt, "imgsz": INPUT_SIZE, "device": "cpu", "verbose": False, "dynamic": True}
    if fmt == "onnx":
        args.update(simplify=True, opset=opset)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"export-{name}-") as tmp:
        written = _run_ultralytics_export(loaded, Path(tmp), args)
        metadata = {
            "format": fmt,
            "model": name,
            "source": loaded.source,
            "pretrained": loaded.pretrained,
            "opset": opset,
            "imgsz": INPUT_SIZE,
            "ultralytics": version("ultralytics"),  # installed: the model was loaded with them
            "torch": version("torch"),
            "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        path, action, message = place_file(
            written, target, overwrite=overwrite, metadata=metadata, fallback_dir=fallback_dir
        )
    _ensure_config(target.parent.parent, name, fmt, Path(repository))
    return ExportResult(
        format=fmt,
        path=path,
        target=target,
        action=action,
        message=message,
        seconds=round(time.perf_counter() - started, 2),
    )


def _run_ultralytics_export(loaded: LoadedYolo, folder: Path, args: dict[str, object]) -> Path:
    """Run ``YOLO.export`` so that its output lands in ``folder``, not beside the weights or in cwd."""
    pt_path = str(folder / f"yolo11{loaded.size}.pt")  # the exporter names its file after it
    with mock.patch.object(loaded.model.model, "pt_path", pt_path, create=True):  # then restored
        written = Path(loaded.model.export(**args))
    if not written.is_file() or written.parent.resolve() != folder.resolve():
        raise RuntimeError(f"Ultralytics wrote {written}, expected a file in {folder}")
    return written


def _ensure_config(model_dir: Path, name: str, fmt: str, repository: Path) -> None:
    """Give ``yolo11<s>_<fmt>`` (s != n) a config.pbtxt copied from the committed yolo11n one."""
    config = model_dir / "config.pbtxt"
    template = repository / triton_model_name("n", fmt) / "config.pbtxt"
    if config.exists() or not template.exists() or config == template:
        return
    text = template.read_text(encoding="utf-8").replace(
        f'name: "{triton_model_name("n", fmt)}"', f'name: "{name}"'
    )
    header = f"# Generated by helpers.export from {template.relative_to(repository)}.\n"
    config.write_text(header + text, encoding="utf-8")


def _read_sidecar(target: Path) -> dict[str, object]:
    try:
        return json.loads(sidecar_path(target).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _move(source: Path, destination: Path, metadata: dict[str, object] | None) -> None:
    digest = sha256_file(source)
    destination.parent.mkdir(parents=True, exist_ok=True)
    # same folder (so os.replace is atomic), same suffix (so .gitignore's patterns cover it)
    partial = destination.with_name(f".{destination.name}.partial{destination.suffix}")
    shutil.copyfile(source, partial)
    os.replace(partial, destination)  # atomic: Triton never sees half a file
    record = {"sha256": digest, "size_bytes": destination.stat().st_size, **(metadata or {})}
    sidecar_path(destination).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- running the exports


def run_torchscript(path: str | os.PathLike[str], batch: np.ndarray) -> np.ndarray:
    """Load a TorchScript file on the CPU and run it on an NCHW batch (notebook 01)."""
    import torch

    return torch_forward(torch.jit.load(str(path), map_location="cpu"), batch)
