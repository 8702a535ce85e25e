"""Committed notebooks are stripped and follow the course's opening (CONTRIBUTING.md, "Notebooks")."""

from __future__ import annotations

import json

import pytest

from tools.run_course import course_notebooks, parse_parameters

NOTEBOOKS = course_notebooks()


def test_there_are_notebooks():
    assert any(nb.name.startswith("00_") for nb in NOTEBOOKS)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.name for nb in NOTEBOOKS])
def test_notebook_is_committed_without_outputs(notebook):
    cells = json.loads(notebook.read_text())["cells"]
    dirty = [
        i
        for i, c in enumerate(cells)
        if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count"))
    ]
    assert dirty == [], f"cells {dirty} have outputs: run `make strip`"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.name for nb in NOTEBOOKS])
def test_notebook_opens_the_course_way(notebook):
    cells = json.loads(notebook.read_text())["cells"]
    first = "".join(cells[0]["source"])
    assert cells[0]["cell_type"] == "markdown" and first.startswith("# "), "H1 title first"
    sources = ["".join(c["source"]) for c in cells]
    assert any(s.startswith("## Setup") for s in sources), "a '## Setup' section"
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged `parameters`"
    assert "import helpers" not in "".join(sources) or "from helpers" in "".join(sources)
    assert "from helpers import *" not in "".join(sources)


def test_parameter_overrides_are_python_literals():
    assert parse_parameters(["N=3", "NAMES=['a', 'b']", "MODE=embedded"]) == {
        "N": 3,
        "NAMES": ["a", "b"],
        "MODE": "embedded",
    }
    with pytest.raises(SystemExit):
        parse_parameters(["no-equals-sign"])
