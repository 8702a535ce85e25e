"""Notebook 01's lesson cells, run as a learner's project would run them (tests/copyable.py).

The copyable cells export YOLO11n with Ultralytics' public API, run the file with ONNX Runtime
on a letterboxed photo, and ask a Triton server serving that file for the same photo's output,
in a temporary folder where ``helpers`` cannot be imported.
The commands the notebook shows as text are the copyable export call as ``yolo export`` (which
runs) and Netron's command line as ``helpers.netron_view`` builds it.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from helpers import yolo
from helpers.commands import format_command
from helpers.lessons.yolo_client import preprocess
from helpers.lessons.yolo_decode import decode
from helpers.netron_view import netron_command
from helpers.paths import MODEL_REPOSITORY, REPO_ROOT
from helpers.server import TritonServer
from tests.copyable import fenced_blocks, run_copyable, tagged_cells

NOTEBOOK = REPO_ROOT / "notebooks" / "01_onnx_export_and_inspection.ipynb"


def notebook_parameters() -> dict[str, object]:
    """The values of the notebook's parameters cell."""
    values: dict[str, object] = {}
    for source in tagged_cells(NOTEBOOK, "parameters"):
        exec(source, {}, values)  # the notebook's own cell
    return values


def test_copyable_cells_export_yolo11_serve_it_and_decode_triton_s_answer(
    tmp_path: Path, no_leftover_server_processes
) -> None:
    image_path = yolo.sample_image_path("bus.jpg")
    export_dir = tmp_path / "export"
    onnx_file = export_dir / "yolo11n.onnx"
    # The server the last cell asks: the committed config next to the file the export cell
    # writes (a link, resolved when the cell loads the model: explicit mode loads nothing before).
    repository = tmp_path / "repository"
    (repository / "yolo11n_onnx" / "1").mkdir(parents=True)
    shutil.copyfile(
        MODEL_REPOSITORY / "yolo11n_onnx" / "config.pbtxt",
        repository / "yolo11n_onnx" / "config.pbtxt",
    )
    (repository / "yolo11n_onnx" / "1" / "model.onnx").symlink_to(onnx_file)
    with TritonServer(repository) as server:
        result = run_copyable(
            NOTEBOOK,
            tmp_path,
            provided={
                "MODEL_FILE": "yolo11n.yaml",  # no checkpoint offline: the architecture only
                "EXPORT_DIR": str(export_dir),
                "IMAGE_PATH": str(image_path),
                "TRITON_HTTP_URL": server.http_url,
            },
            names=["blob", "output", "served"],
        )
    # parameters, provided names, then the copyable cells: export, letterbox, session, decode, Triton
    exported, letterboxed, output_shape, _, answer = result["shown"][2:7]
    values = result["values"]

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

    # the cell's letterbox is notebook 03's preprocess, to the last bit
    batch, _ = preprocess(yolo.load_image(image_path))
    assert letterboxed == [1, 3, 640, 640]
    np.testing.assert_array_equal(np.asarray(values["blob"], np.float32), batch)

    # the session's output is what ONNX Runtime gives for that input
    assert output_shape == [1, 84, 8400]
    reference = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"]).run(
        None, {"images": batch}
    )[0]
    np.testing.assert_allclose(np.asarray(values["output"]), reference, atol=1e-5)

    # Triton's answer: the same output, so the same boxes (random weights keep none at 0.25:
    # compare at half the best score too, where there are boxes)
    served = np.asarray(values["served"], np.float32)
    assert answer["output0"] == [1, 84, 8400] and answer["max |Triton - in-process|"] < 1e-4
    np.testing.assert_allclose(served, reference, atol=1e-4)
    params = notebook_parameters()
    assert answer["boxes"] == len(
        decode(reference, params["CONF_THRESHOLD"], params["IOU_THRESHOLD"])[0]
    )
    low = float(reference[0, 4:].max()) / 2
    served_boxes, _, served_classes = decode(served, conf=low)
    boxes, _, classes = decode(reference, conf=low)
    assert len(boxes) > 0 and served_classes.tolist() == classes.tolist()
    np.testing.assert_allclose(served_boxes, boxes, atol=1e-2)


def yolo_export_line(model: str = "yolo11n.pt") -> list[str]:
    """The copyable cell's ``model.export(...)`` call as Ultralytics' command line, option by option."""
    params = notebook_parameters()
    call = next(
        node
        for source in tagged_cells(NOTEBOOK)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "export"
    )
    options = {
        kw.arg: params[kw.value.id] if isinstance(kw.value, ast.Name) else kw.value.value
        for kw in call.keywords
    }
    return ["yolo", "export", f"model={model}", *(f"{k}={v}" for k, v in options.items())]


def test_commands_shown_as_text_are_the_builders() -> None:
    blocks = fenced_blocks(NOTEBOOK)
    checkpoint = f"yolo11{notebook_parameters()['MODEL_SIZE']}.pt"
    assert format_command(yolo_export_line(checkpoint)) in blocks
    assert format_command(netron_command("yolo11n.onnx")) in blocks


def test_yolo_export_line_runs(tmp_path: Path) -> None:
    command = yolo_export_line("yolo11n.yaml")  # offline: the architecture in place of the .pt
    command[0] = str(Path(sys.executable).with_name("yolo"))
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    onnx.checker.check_model(onnx.load(str(tmp_path / "yolo11n.onnx")))
