"""Cells tagged ``copyable`` read as a learner's own code (CONTRIBUTING.md).

Each notebook's own test (``tests/test_lessons_NN.py``) runs its copyable cells against a
real server where ``helpers`` cannot be imported; this module checks what needs no server.
"""

from __future__ import annotations

import ast

import nbformat
import pytest

from tests.copyable import run_copyable, tagged_cells
from tools.run_course import course_notebooks

NOTEBOOKS = course_notebooks()


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.name for nb in NOTEBOOKS])
def test_copyable_cells_import_only_public_libraries(notebook):
    for source in tagged_cells(notebook):
        for node in ast.walk(ast.parse(source)):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not [n for n in names if n.split(".")[0] in {"helpers", "tests"}], source


def test_the_runner_blocks_helpers_and_shows_last_expressions(tmp_path):
    nb = nbformat.v4.new_notebook()
    for source, tag in [
        ("N = 2", "parameters"),
        ("import numpy as np\nvalues = np.arange(N * FACTOR)\nvalues.sum()", "copyable"),
        ("try:\n    import helpers\nexcept ModuleNotFoundError as error:\n    BLOCKED = str(error)", "copyable"),
    ]:  # fmt: skip
        nb.cells.append(nbformat.v4.new_code_cell(source, metadata={"tags": [tag]}))
    notebook = tmp_path / "00_demo.ipynb"
    nbformat.write(nb, notebook)
    result = run_copyable(notebook, tmp_path, provided={"FACTOR": 3}, names=["values", "BLOCKED"])
    assert result["shown"][-2] == 15  # 0 + 1 + ... + 5: N from the parameters cell, FACTOR provided
    assert result["values"]["values"] == [0, 1, 2, 3, 4, 5]
    assert "may not import 'helpers'" in result["values"]["BLOCKED"]
