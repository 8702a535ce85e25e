"""Notebook 02's lesson cells, run as a learner's project would run them (tests/copyable.py).

The trtexec lines the notebook shows as text are the builders' output for its parameters; the
copyable cells (ONNX Runtime graph optimisation levels, the saved ``extended`` model, dynamic
INT8) run where ``helpers`` cannot be imported, on the course's CI model (YOLO11n, random
weights with calibrated BatchNorm), and their files stay within the stated tolerances.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers import ort_optimize as oo
from helpers.commands import format_command
from helpers.lessons.optimized_models import TOLERANCES, compare_outputs, within_tolerance
from helpers.paths import BUILD_DIR, REPO_ROOT
from helpers.tensorrt_build import (
    ONNX_MODEL,
    TRT_MODEL_NAME,
    EngineSpec,
    benchmark_command,
    build_commands,
    inspect_command,
)
from tests.copyable import fenced_blocks, run_copyable, tagged_cells
from tests.reliability_models import yolo11n_files

NOTEBOOK = REPO_ROOT / "notebooks" / "02_tensorrt_engine_builds.ipynb"
#: Paths as the notebook shows them: relative to the repository root, where the commands run.
TYPED_ONNX = Path("model_repository/yolo11n_onnx/1/model.onnx")
TYPED_BUILD = Path("build/tensorrt")
TYPED_PLAN = Path("model_repository/yolo11n_trt/1/model.plan")


def notebook_parameters() -> dict[str, object]:
    """The values of the notebook's parameters cell."""
    values: dict[str, object] = {}
    for source in tagged_cells(NOTEBOOK, "parameters"):
        exec(source, {}, values)  # the notebook's own cell
    return values


def test_typed_paths_are_the_ones_the_notebook_builds_with() -> None:
    assert ONNX_MODEL.relative_to(REPO_ROOT) == TYPED_ONNX
    assert (BUILD_DIR / "tensorrt").relative_to(REPO_ROOT) == TYPED_BUILD
    assert Path("model_repository", TRT_MODEL_NAME, "1", "model.plan") == TYPED_PLAN


def test_trtexec_lines_shown_as_text_are_the_builders() -> None:
    blocks = fenced_blocks(NOTEBOOK)
    p = notebook_parameters()
    specs = {
        precision: EngineSpec(
            precision, TYPED_BUILD, TYPED_ONNX, p["MIN_BATCH"], p["OPT_BATCH"], p["MAX_BATCH"]
        )
        for precision in p["PRECISIONS"]
    }
    assert set(specs) == {"fp32", "fp16"}
    for precision, spec in specs.items():
        (command,) = build_commands("trtexec", spec)
        text = format_command(command)
        assert text in blocks, f"the {precision} build line is not in the notebook"
        assert ("--fp16" in command) == (precision == "fp16")
        for flag, batch in (
            ("min", p["MIN_BATCH"]),
            ("opt", p["OPT_BATCH"]),
            ("max", p["MAX_BATCH"]),
        ):
            assert f"--{flag}Shapes=images:{batch}x3x640x640" in command
    timings = [
        format_command(
            benchmark_command(
                "trtexec", specs[p["SERVE_PRECISION"]].plan, b, duration_s=p["TRTEXEC_DURATION_S"]
            )
        )
        for b in p["BATCH_SIZES"]
    ]
    assert timings[0] in blocks  # one timing line shown; the text names the other batch sizes
    shapes = [line.strip(" \\") for line in timings[0].splitlines() if "--shapes=" in line]
    for batch, timing in zip(p["BATCH_SIZES"][1:], timings[1:]):
        assert timing == timings[0].replace(shapes[0], f"--shapes=images:{batch}x3x640x640")
        assert f"`--shapes=images:{batch}x3x640x640` for a batch of {batch}" in NOTEBOOK.read_text()
    inspect = inspect_command("trtexec", TYPED_PLAN)
    assert format_command(inspect) in blocks
    assert inspect[1] == f"--loadEngine={TYPED_PLAN}" and "--verbose" in inspect


@pytest.fixture(scope="module")
def fp32_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of YOLO11n's ONNX file (notebook 01's, or exported for the test session)."""
    folder = tmp_path_factory.mktemp("fp32")
    return Path(shutil.copyfile(yolo11n_files(tmp_path_factory)["onnx"], folder / "model.onnx"))


def test_copyable_cells_optimise_and_quantise_within_tolerance(
    fp32_model: Path, tmp_path: Path
) -> None:
    variants = tmp_path / "variants"
    result = run_copyable(
        NOTEBOOK,
        tmp_path,
        provided={"ONNX_PATH": str(fp32_model), "VARIANTS_DIR": str(variants)},
    )
    levels, saved, quantized = result["shown"][2:5]
    assert levels == ["disabled", "basic", "extended", "all"]
    assert (saved, quantized) == ("yolo11n_ortopt.onnx", "yolo11n_int8_dynamic.onnx")

    ops = {level: oo.op_counts(variants / f"level_{level}.onnx") for level in levels}
    assert ops["basic"].sum() < ops["disabled"].sum()
    assert ops["extended"].get("com.microsoft:QuickGelu", 0) > 50  # SiLU fused
    assert any(op.startswith("com.microsoft.nchwc") for op in ops["all"].index)

    batch = oo.sample_batch(2)
    reference = oo.make_session(fp32_model, "disabled").run(None, {"images": batch})[0]

    saved_ops = oo.op_counts(variants / saved)
    assert saved_ops.get("com.microsoft:QuickGelu", 0) > 50
    assert not any(op.startswith("com.microsoft.nchwc") for op in saved_ops.index)
    output = oo.make_session(variants / saved, "disabled").run(None, {"images": batch})[0]
    comparison = compare_outputs(reference, output)
    assert within_tolerance(comparison, TOLERANCES["ortopt"]), comparison

    int8_ops = oo.op_counts(variants / quantized)
    assert int8_ops.get("ai.onnx:ConvInteger", 0) > 50
    output = oo.make_session(variants / quantized).run(None, {"images": batch})[0]
    assert np.isfinite(output).all()
    comparison = compare_outputs(reference, output)
    assert within_tolerance(comparison, TOLERANCES["int8_dynamic"]), comparison
