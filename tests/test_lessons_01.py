"""Notebook 01's lesson cells, run as a learner's project would run them (tests/copyable.py).

The copyable cells export YOLO11n with Ultralytics' public API and run the file with ONNX
Runtime on a letterboxed photo, in a temporary folder where ``helpers`` cannot be imported.
The commands the notebook shows as text (``yolo export``, ``netron``) are the builders' output.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from helpers import yolo
from helpers.commands import format_command
from helpers.export import yolo_export_command
from helpers.netron_view import netron_command
from helpers.paths import REPO_ROOT
from tests.copyable import assert_same_function, fenced_blocks, run_copyable, tagged_cells

NOTEBOOK = REPO_ROOT / "notebooks" / "01_onnx_export_and_inspection.ipynb"


def notebook_parameters() -> dict[str, object]:
    """The values of the notebook's parameters cell."""
    values: dict[str, object] = {}
    for source in tagged_cells(NOTEBOOK, "parameters"):
        exec(source, {}, values)  # the notebook's own cell
    return values


def test_copyable_cells_export_yolo11_and_run_it_with_onnxruntime(tmp_path: Path) -> None:
    image_path = yolo.sample_image_path("bus.jpg")
    export_dir = tmp_path / "export"
    result = run_copyable(
        NOTEBOOK,
        tmp_path,
        provided={
            "MODEL_FILE": "yolo11n.yaml",  # no checkpoint offline: the architecture, random weights
            "EXPORT_DIR": str(export_dir),
            "IMAGE_PATH": str(image_path),
        },
        names=["padded", "output"],
    )
    # parameters, provided names, then the copyable cells: export, letterbox, session, decode
    exported, letterboxed, output_shape, kept_boxes = result["shown"][2:6]

    onnx_file = export_dir / "yolo11n.onnx"
    assert onnx_file.is_file() and str(onnx_file) in exported
    assert not (tmp_path / "yolo11n.onnx").exists()  # moved out of the working folder
    model = onnx.load(str(onnx_file))
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == ["images"]
    assert [o.name for o in model.graph.output] == ["output0"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch
    assert {op.version for op in model.opset_import if op.domain in ("", "ai.onnx")} == {
        notebook_parameters()["OPSET"]
    }

    # the cell's letterbox is the course's, pixel for pixel
    expected_padded, _ = yolo.letterbox(yolo.load_image(image_path))
    np.testing.assert_array_equal(np.asarray(result["values"]["padded"]), expected_padded)
    assert letterboxed == [1, 3, 640, 640]

    # the cell's session output is what ONNX Runtime gives for the course's preprocessing
    assert output_shape == [1, 84, 8400]
    batch, _ = yolo.preprocess(yolo.load_image(image_path))
    reference = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"]).run(
        None, {"images": batch}
    )[0]
    np.testing.assert_allclose(np.asarray(result["values"]["output"]), reference, atol=1e-5)

    # the decode cell ran on that output (random weights: its score threshold keeps nothing)
    assert kept_boxes[1] == 4
    assert kept_boxes[0] == len(yolo.decode(reference[0])[0])


def test_decode_cell_is_the_function_later_notebooks_import() -> None:
    assert_same_function(NOTEBOOK, yolo.decode)


def test_commands_shown_as_text_are_the_builders() -> None:
    blocks = fenced_blocks(NOTEBOOK)
    params = notebook_parameters()
    checkpoint = f"yolo11{params['MODEL_SIZE']}.pt"
    assert format_command(yolo_export_command(checkpoint, opset=params["OPSET"])) in blocks
    assert format_command(netron_command("yolo11n.onnx")) in blocks


def test_yolo_export_line_has_the_options_of_the_python_call() -> None:
    params = notebook_parameters()
    call = next(
        node
        for source in tagged_cells(NOTEBOOK)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "export"
    )
    in_python = {
        kw.arg: str(params[kw.value.id] if isinstance(kw.value, ast.Name) else kw.value.value)
        for kw in call.keywords
    }
    on_command_line = dict(
        arg.split("=", 1) for arg in yolo_export_command(opset=params["OPSET"])[2:]
    )
    assert on_command_line.pop("model") == "yolo11n.pt"
    assert in_python == on_command_line


def test_yolo_export_line_runs(tmp_path: Path) -> None:
    command = yolo_export_command("yolo11n.yaml")  # offline: the architecture in place of the .pt
    command[0] = str(Path(sys.executable).with_name("yolo"))
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    onnx.checker.check_model(onnx.load(str(tmp_path / "yolo11n.onnx")))
