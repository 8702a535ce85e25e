"""Execute every notebook of the course in order, headless: ``make run``.

Each executed copy goes to ``build/notebooks/`` as ``.ipynb`` and ``.html``. Cells tagged
``raises-exception`` show an error on purpose: the run goes on past them, as JupyterLab's
"Run All Cells" and nbmake do, and fails if such a cell raises nothing (the error the
notebook teaches no longer happens). An error in any other cell stops the run with a
non-zero exit that names the notebook and the cell.

    python -m tools.run_course                 # every notebook
    python -m tools.run_course 03 04           # only those whose name starts so
    python -m tools.run_course -p MEASURE_SECONDS=2   # override a parameter everywhere

``make run`` takes the same as make command-line variables: ``make run NOTEBOOKS="03 07"``,
``make run MEASURE_SECONDS=2``, ``make run TRITON_URL=127.0.0.1:8000``. The Makefile passes
their names (``--from-make``); the values are read from the environment, where make puts
command-line variables exactly as typed.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from helpers.paths import REPO_ROOT, build_dir

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
INTENDED_ERROR_TAG = "raises-exception"


@dataclass
class NotebookFailed(Exception):
    """A notebook of the course did not run as written (``make run``)."""

    notebook: str
    cell_index: int
    execution_count: int | None
    reason: str

    def __str__(self) -> str:
        count = "not run" if self.execution_count is None else self.execution_count
        return f"{self.notebook}: cell {self.cell_index} (execution count {count}) {self.reason}"


def course_notebooks(prefixes: list[str] | None = None, folder: Path = NOTEBOOKS_DIR) -> list[Path]:
    """The course's notebooks in order (``NN_name.ipynb``), optionally filtered by prefix."""
    found = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if prefixes:
        found = [nb for nb in found if any(nb.name.startswith(p) for p in prefixes)]
    return found


def parse_parameters(pairs: list[str]) -> dict[str, object]:
    """Turn ``NAME=value`` strings into papermill parameters (values as Python literals)."""
    parameters: dict[str, object] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.isidentifier():
            raise SystemExit(f"parameter must look like NAME=value, got {pair!r}")
        try:
            parameters[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parameters[name] = value
    return parameters


PARAMETER_NAME = re.compile(r"[A-Z][A-Z0-9_]*")


def make_variables(
    names: str, environ: dict[str, str] | None = None
) -> tuple[list[str], dict[str, object]]:
    """``make run``'s command-line variables: (notebook prefixes, parameters).

    ``names`` are the variables' names as the Makefile lists them; make exports each one to
    the recipe's environment with its value as typed, which ``environ`` (default
    ``os.environ``) holds. ``NOTEBOOKS`` selects notebooks ("03 07" or "03,07"); every other
    name is a notebook parameter, its value a Python literal or else a string.
    """
    environ = os.environ if environ is None else environ
    prefixes: list[str] = []
    pairs: list[str] = []
    for name in names.split():
        if not PARAMETER_NAME.fullmatch(name):
            raise SystemExit(
                f'make run: {name!r} is not a notebook parameter: give NOTEBOOKS="03 07" or '
                "UPPER_CASE parameters of the notebooks' parameters cells, e.g. "
                "make run MEASURE_SECONDS=2"
            )
        if name not in environ:
            raise SystemExit(f"make run: {name} was named but make did not export its value")
        if name == "NOTEBOOKS":
            prefixes += environ[name].replace(",", " ").split()
        else:
            pairs.append(f"{name}={environ[name]}")
    return prefixes, parse_parameters(pairs)


def notebook_parameters(notebook: Path) -> set[str]:
    """The names the notebook's cell tagged ``parameters`` assigns."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    names: set[str] = set()
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in _tags(cell):
            for node in ast.walk(ast.parse(cell.source)):
                if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                    names.add(node.id)
    return names


def check_known(parameters: dict[str, object], notebooks: list[Path]) -> None:
    """Refuse a parameter that no selected notebook takes (a typo would change nothing)."""
    known = set().union(*(notebook_parameters(nb) for nb in notebooks))
    unknown = sorted(set(parameters) - known)
    if unknown:
        names = ", ".join(nb.name for nb in notebooks)
        raise SystemExit(
            f"no notebook among {names} takes the parameter(s) {', '.join(unknown)}; "
            f"their parameters: {', '.join(sorted(known)) or 'none'}"
        )


def _tags(cell) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def _first_error(cell) -> dict | None:
    return next((o for o in cell.get("outputs", []) if o.get("output_type") == "error"), None)


def check_errors(nb, name: str) -> None:
    """Raise :class:`NotebookFailed` for the first cell whose error is not the one intended."""
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        error = _first_error(cell)
        intended = INTENDED_ERROR_TAG in _tags(cell)
        if error is not None and not intended:
            raise NotebookFailed(
                name, index, cell.get("execution_count"),
                f"raised {error['ename']}: {error['evalue']}",
            )  # fmt: skip
        if intended and error is None:
            raise NotebookFailed(
                name, index, cell.get("execution_count"),
                f"is tagged {INTENDED_ERROR_TAG!r} but raised nothing: the error it shows "
                "no longer happens (fix the cell or remove the tag)",
            )  # fmt: skip


def inject_parameters(nb, parameters: dict[str, object]) -> None:
    """Add papermill's ``injected-parameters`` cell after the cell tagged ``parameters``."""
    import nbformat
    from papermill.translators import translate_parameters

    source = translate_parameters("python3", "python", parameters, "Parameters")
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = ["injected-parameters"]
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in _tags(c)]
    nb.cells.insert(tagged[0] + 1 if tagged else 0, cell)


def execute(
    notebook: Path,
    out_dir: Path,
    parameters: dict[str, object],
    cell_timeout: int | None = 900,
) -> Path:
    """Execute one notebook (cwd = its folder), write .ipynb + .html, raise if it failed."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    from nbconvert import HTMLExporter
    from tqdm.auto import tqdm

    nb = nbformat.read(notebook, as_version=4)
    if parameters:
        inject_parameters(nb, parameters)
    code_cells = sum(cell.cell_type == "code" for cell in nb.cells)
    bar = tqdm(total=code_cells, desc=notebook.stem, unit="cell", leave=False, disable=None)
    current = {"index": 0}
    client = NotebookClient(
        nb,
        timeout=cell_timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(notebook.parent)}},
        on_cell_start=lambda cell_index, **_: current.update(index=cell_index),
        on_cell_executed=lambda **_: bar.update(1),
    )
    output = out_dir / notebook.name
    stopped: Exception | None = None
    try:
        with open(output.with_suffix(".kernel.log"), "wb") as kernel_log:
            client.execute(stderr=kernel_log)  # the kernel's own messages, out of the progress
    except CellExecutionError:
        pass  # the untagged error is in the cell's outputs; check_errors names it below
    except Exception as error:  # a cell timed out, the kernel died
        stopped = error
    finally:
        bar.close()
        nbformat.write(nb, output)
        html, _ = HTMLExporter().from_notebook_node(nb)
        output.with_suffix(".html").write_text(html, encoding="utf-8")
    if stopped is not None:
        index = current["index"]
        raise NotebookFailed(
            notebook.name, index, nb.cells[index].get("execution_count"),
            f"stopped the run: {type(stopped).__name__}: {stopped}".strip(),
        )  # fmt: skip
    check_errors(nb, notebook.name)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.run_course",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("prefixes", nargs="*", help="run only notebooks starting with these")
    parser.add_argument("-p", "--parameter", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument(
        "--from-make", default="", metavar="NAMES",
        help="make's command-line variables by name (the Makefile's run target); values from "
        "the environment",
    )  # fmt: skip
    parser.add_argument("--notebooks", type=Path, default=NOTEBOOKS_DIR, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None, help="where executed copies go")
    parser.add_argument("--cell-timeout", type=int, default=900, metavar="SECONDS")
    args = parser.parse_args(argv)

    make_prefixes, make_parameters = make_variables(args.from_make)
    prefixes = args.prefixes + make_prefixes
    notebooks = course_notebooks(prefixes, args.notebooks)
    if not notebooks:
        print(f"no notebooks match {prefixes} in {args.notebooks}", file=sys.stderr)
        return 2
    parameters = {**make_parameters, **parse_parameters(args.parameter)}
    check_known(parameters, notebooks)
    out_dir = args.out or build_dir("notebooks")
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    for number, notebook in enumerate(notebooks, 1):
        print(f"[{number}/{len(notebooks)}] {notebook.name} ...", end=" ", flush=True)
        t0 = time.monotonic()
        try:
            execute(notebook, out_dir, parameters, args.cell_timeout)
        except NotebookFailed as failure:
            print("FAILED", flush=True)
            print(
                f"\n{failure}\nexecuted copy with the traceback: {out_dir / notebook.name} "
                "(.html beside it)",
                file=sys.stderr,
            )
            return 1
        print(f"ok ({time.monotonic() - t0:.0f} s)", flush=True)
    print(
        f"all {len(notebooks)} notebooks ran in {time.monotonic() - started:.0f} s; "
        f"executed copies and HTML in {out_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
