"""Execute every notebook of the course in order, headless: ``make run``.

Each executed copy goes to ``build/notebooks/`` as ``.ipynb`` and ``.html``. A failing
cell stops the run with a non-zero exit that names the notebook and the cell.

    python -m helpers.run_course                 # every notebook
    python -m helpers.run_course 03 04           # only those whose name starts so
    python -m helpers.run_course -p MEASURE_SECONDS=2   # override a parameter everywhere
"""

from __future__ import annotations

import argparse
import ast
import sys
import time
from pathlib import Path

from helpers.paths import REPO_ROOT, build_dir

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"


def course_notebooks(prefixes: list[str] | None = None) -> list[Path]:
    """The course's notebooks in order (``NN_name.ipynb``), optionally filtered by prefix."""
    found = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
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


def execute(notebook: Path, out_dir: Path, parameters: dict[str, object]) -> Path:
    """Execute one notebook with papermill (cwd = notebooks/) and write .ipynb + .html."""
    import nbformat
    import papermill
    from nbconvert import HTMLExporter

    output = out_dir / notebook.name
    try:
        papermill.execute_notebook(
            str(notebook),
            str(output),
            cwd=str(NOTEBOOKS_DIR),
            parameters=parameters,
            kernel_name="python3",
            progress_bar=False,
            log_output=False,
        )
    finally:
        if output.exists():
            html, _ = HTMLExporter().from_notebook_node(nbformat.read(output, as_version=4))
            output.with_suffix(".html").write_text(html, encoding="utf-8")
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m helpers.run_course",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("prefixes", nargs="*", help="run only notebooks starting with these")
    parser.add_argument("-p", "--parameter", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args(argv)

    from papermill.exceptions import PapermillExecutionError

    notebooks = course_notebooks(args.prefixes)
    if not notebooks:
        print(f"no notebooks match {args.prefixes} in {NOTEBOOKS_DIR}", file=sys.stderr)
        return 2
    parameters = parse_parameters(args.parameter)
    out_dir = build_dir("notebooks")
    started = time.monotonic()
    for number, notebook in enumerate(notebooks, 1):
        print(f"[{number}/{len(notebooks)}] {notebook.name} ...", end=" ", flush=True)
        t0 = time.monotonic()
        try:
            execute(notebook, out_dir, parameters)
        except PapermillExecutionError as error:
            print("FAILED")
            print(
                f"\n{notebook.name}: cell {error.cell_index} (execution count {error.exec_count}) "
                f"raised {error.ename}: {error.evalue}\n"
                f"executed copy with the traceback: {out_dir / notebook.name} (.html beside it)",
                file=sys.stderr,
            )
            return 1
        print(f"ok ({time.monotonic() - t0:.0f} s)")
    print(
        f"all {len(notebooks)} notebooks ran in {time.monotonic() - started:.0f} s; "
        f"executed copies and HTML in {out_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
