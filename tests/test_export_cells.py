"""The lesson code later notebooks reuse has one home, its cell: ``helpers/lessons/*.py`` are
generated from the cells marked ``#| export NAME`` and must equal what ``make export`` writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tools import export_cells


def notebook(folder: Path, *cells: str, name: str = "07_example.ipynb") -> Path:
    path = folder / name
    path.write_text(
        json.dumps(
            {
                "cells": [
                    {"cell_type": "code", "id": f"c{i}", "metadata": {}, "source": source}
                    for i, source in enumerate(cells)
                ],
                "metadata": {},
                "nbformat": 4,
                "nbformat_minor": 5,
            }
        )
    )
    return path


def test_every_generated_module_is_what_its_notebook_cells_say():
    problems = export_cells.stale(export_cells.modules())
    assert not problems, "\n".join(problems)


def test_the_repository_has_generated_modules_that_import():
    import importlib

    names = sorted(export_cells.modules())
    assert len(names) >= 3, names
    for name in names:
        module = importlib.import_module(f"helpers.lessons.{name}")
        first = Path(module.__file__).read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith("# Generated from notebooks/") and "do not edit" in first


def test_a_hand_edit_is_named_with_its_notebook_and_cell(tmp_path: Path):
    source = notebook(
        tmp_path,
        "x = 1",
        "#| export demo\nimport math\n\n\ndef area(r: float) -> float:\n    return math.pi * r * r",
        "#| export demo\ndef twice(v):\n    return 2 * v",
    )
    expected = export_cells.modules([source])
    folder = tmp_path / "lessons"
    export_cells.write(expected, folder)
    assert export_cells.stale(expected, folder) == []
    text = (folder / "demo.py").read_text()
    assert text.startswith(f"# Generated from {source} by `make export`: do not edit.")
    namespace: dict = {}
    exec(compile(text, "demo.py", "exec"), namespace)  # noqa: S102 - our generated module
    assert namespace["twice"](namespace["area"](1.0)) == pytest.approx(6.2832, abs=1e-4)

    (folder / "demo.py").write_text(text.replace("2 * v", "3 * v"))
    (problem,) = export_cells.stale(expected, folder)
    assert f"differs from {source} at cell c2" in problem


@pytest.mark.parametrize(
    ("cell", "words"),
    [
        ("#| export demo\ndef f():\n    return 1\n\nf()", "move `f()` to the next cell"),
        ("#| export demo\ndef f():\n    return THRESHOLD", "uses THRESHOLD, which no exported cell"),
        ("#| export two words\nx = 1", "write `#| export NAME`"),
    ],
)
def test_an_exported_cell_that_depends_on_the_notebook_is_refused(tmp_path, cell, words):
    with pytest.raises(export_cells.ExportError, match="cell c0") as raised:
        export_cells.modules([notebook(tmp_path, cell)])
    assert words in str(raised.value)


def test_names_bound_inside_exported_functions_are_theirs(tmp_path: Path):
    cell = (
        "#| export demo\n"
        "def outer(items):\n"
        "    def inner(x):\n"
        "        return x + 1\n"
        "\n"
        "    class Box:\n"
        "        pass\n"
        "\n"
        "    return [inner(i) for i in items], Box, [j for j in range(2)]"
    )
    assert "def inner(x):" in export_cells.modules([notebook(tmp_path, cell)])["demo"]


def test_one_module_comes_from_one_notebook(tmp_path: Path):
    first = notebook(tmp_path, "#| export demo\nx = 1", name="01_a.ipynb")
    second = notebook(tmp_path, "#| export demo\ny = 2", name="02_b.ipynb")
    with pytest.raises(export_cells.ExportError, match="one module, one notebook"):
        export_cells.modules([first, second])
