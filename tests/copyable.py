"""Run a notebook's ``copyable`` cells where ``helpers`` cannot be imported (CONTRIBUTING.md).

A learner copies these cells into a project that has the public libraries and nothing of
ours, so the test does the same: the notebook's parameters cell, then the names the test
provides (a server URL instead of the server a helper started; an array is passed as a
``.npy`` file), then every cell tagged
``copyable`` in order, in a fresh Python process whose working folder is a temporary one
and in which ``import helpers`` fails. It returns what each cell showed (the repr of its
last expression) and the values of the names asked for, for the test to assert on.
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

COPYABLE = "copyable"
RUNNER = Path(__file__).with_name("copyable_runner.py")


def _cells(notebook: Path) -> list[dict]:
    return json.loads(notebook.read_text(encoding="utf-8"))["cells"]


def _source(cell: dict) -> str:
    return "".join(cell["source"])


def tagged_cells(notebook: Path, tag: str = COPYABLE) -> list[str]:
    """The sources of the code cells tagged ``tag``, in order."""
    return [
        _source(c)
        for c in _cells(notebook)
        if c["cell_type"] == "code" and tag in c.get("metadata", {}).get("tags", [])
    ]


def fenced_blocks(notebook: Path, language: str = "bash") -> list[str]:
    """The ```language fenced blocks of the notebook's markdown cells (commands shown as text)."""
    blocks = []
    for cell in _cells(notebook):
        if cell["cell_type"] != "markdown":
            continue
        lines, inside = _source(cell).splitlines(), None
        for line in lines:
            if inside is None and line.strip() == f"```{language}":
                inside = []
            elif inside is not None and line.strip() == "```":
                blocks.append("\n".join(inside))
                inside = None
            elif inside is not None:
                inside.append(line)
    return blocks


def run_copyable(
    notebook: Path,
    workdir: Path,
    provided: dict[str, object] | None = None,
    names: list[str] = (),
    timeout: float = 600,
) -> dict:
    """Run ``notebook``'s copyable cells as a learner's project would; fail with their error."""
    cells = tagged_cells(notebook)
    assert cells, f"{notebook.name} has no cell tagged {COPYABLE!r}"
    for index, source in enumerate(cells):
        magic = [line for line in source.splitlines() if line.lstrip().startswith(("%", "!"))]
        assert not magic, f"copyable cell {index} of {notebook.name} uses IPython syntax: {magic}"
    parameters = tagged_cells(notebook, "parameters")
    lines = []
    for name, value in (provided or {}).items():
        if isinstance(value, np.ndarray):  # an array the notebook's plumbing computed
            np.save(workdir / f"{name}.npy", value)
            lines.append(f"{name} = __import__('numpy').load({f'{name}.npy'!r})")
        else:
            lines.append(f"{name} = {value!r}")
    preamble = "\n".join(lines)
    job = workdir / "copyable.json"
    job.write_text(
        json.dumps({"cells": [*parameters, preamble, *cells], "names": list(names)}),
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["MPLBACKEND"] = "Agg"
    done = subprocess.run(  # noqa: S603 - our runner, an argument list
        [sys.executable, str(RUNNER), str(job)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(
            f"{notebook.name}'s copyable cells failed outside the course (exit {done.returncode}):\n"
            f"{done.stderr[-4000:]}"
        )
    return json.loads((workdir / "copyable.out.json").read_text(encoding="utf-8"))


def cell_function(notebook: Path, name: str) -> str:
    """The source of function ``name`` as a cell of ``notebook`` defines it."""
    for source in tagged_cells(notebook) + [
        _source(c) for c in _cells(notebook) if c["cell_type"] == "code"
    ]:
        tree = ast.parse(source)
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
                return ast.get_source_segment(source, node)
    raise AssertionError(f"no cell of {notebook.name} defines {name}()")


def assert_same_function(notebook: Path, function) -> None:
    """The helper that later notebooks import is the very function the lesson cell shows."""
    shown = ast.dump(ast.parse(cell_function(notebook, function.__name__)))
    packaged = ast.dump(ast.parse(textwrap.dedent(inspect.getsource(function))))
    assert shown == packaged, (
        f"{function.__module__}.{function.__name__} differs from the cell of {notebook.name} "
        "that teaches it: change both (CONTRIBUTING.md, 'One copy of lesson code')"
    )
