"""Write the lesson code that later notebooks, tests and tools reuse from its cells: ``make export``.

A code cell whose first line is ``#| export NAME`` (nbdev's ``#| export``, d2l's ``#@save``) is
copied, as it is, into the generated module ``helpers/lessons/NAME.py``. The cell is the only
home of that code: the module's first line names the notebook and says not to edit it, and
``tests/test_export_cells.py`` regenerates every module and fails on any difference, naming the
notebook and the cell.

Rules, checked here so a module cannot depend on a notebook's state:
- an exported cell holds only imports, definitions (``def``, ``class``) and assignments of
  constants: a call to show its result belongs in the next cell;
- all exported cells of one notebook go to one module, and a module comes from one notebook;
- an exported function takes what it needs (thresholds, clients, URLs) as parameters: a name
  that is neither defined by the exported cells nor a builtin is refused (the notebook's
  parameters cell is not part of the module).

    python -m tools.export_cells          # write helpers/lessons/*.py
    python -m tools.export_cells --check  # exit 1 and name the cell when a module is stale
"""

from __future__ import annotations

import argparse
import ast
import builtins
import json
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
LESSONS_DIR = REPO_ROOT / "helpers" / "lessons"
MARKER = "#| export"
HEADER = "# Generated from {notebook} by `make export`: do not edit."
CELL_LINE = "# ---- cell {cell_id}"
INIT = '"""Lesson code generated from the notebooks\' cells marked `#| export NAME` (`make export`)."""\n'
ALLOWED = (
    ast.Import,
    ast.ImportFrom,
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.ClassDef,
    ast.Assign,
    ast.AnnAssign,
)


class ExportError(ValueError):
    """An exported cell breaks one of the rules above; the message names the notebook and cell."""


@dataclass(frozen=True)
class ExportedCell:
    notebook: str  # notebooks/NN_name.ipynb
    cell_id: str
    module: str  # NAME of helpers/lessons/NAME.py
    code: str  # the cell without its marker line


def exported_cells(notebook: Path) -> list[ExportedCell]:
    """The cells of ``notebook`` marked ``#| export NAME``, in order."""
    path = notebook.resolve()
    relative = path.relative_to(REPO_ROOT).as_posix() if path.is_relative_to(REPO_ROOT) else str(path)
    cells = []
    for index, cell in enumerate(json.loads(notebook.read_text(encoding="utf-8"))["cells"]):
        source = "".join(cell["source"])
        first, _, rest = source.partition("\n")
        if cell["cell_type"] != "code" or not first.startswith(MARKER):
            continue
        where = f"{relative} cell {cell.get('id', index)}"
        module = first[len(MARKER) :].strip()
        if not module.isidentifier():
            raise ExportError(f"{where}: write `{MARKER} NAME` (NAME of helpers/lessons/NAME.py)")
        cells.append(ExportedCell(relative, cell.get("id", str(index)), module, rest.strip("\n")))
    return cells


def _check_statements(cell: ExportedCell) -> set[str]:
    """Refuse statements other than imports and definitions; return the names the cell binds."""
    where = f"{cell.notebook} cell {cell.cell_id}"
    try:
        tree = ast.parse(cell.code)
    except SyntaxError as error:
        raise ExportError(f"{where}: {error}") from error
    bound: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # a docstring or a bare string
        if not isinstance(node, ALLOWED):
            raise ExportError(
                f"{where}, line {node.lineno}: an exported cell holds only imports, definitions "
                f"and constants; move `{ast.get_source_segment(cell.code, node)}` to the next cell"
            )
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        else:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                bound.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return bound


def _free_names(code: str) -> set[str]:
    """Global names ``code`` reads (an over-approximation that ignores local scopes' own names)."""
    tree = ast.parse(code)
    local: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            if not isinstance(node, ast.Lambda):
                local.add(node.name)  # a def inside a def binds its name too
            arguments = node.args
            for arg in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]:
                local.add(arg.arg)
            for arg in (arguments.vararg, arguments.kwarg):
                if arg is not None:
                    local.add(arg.arg)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            local.add(node.id)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            local.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            local.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.ClassDef):
            local.add(node.name)
    read = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    return read - local - set(dir(builtins))


def render(cells: list[ExportedCell]) -> str:
    """The text of one generated module from its notebook's exported cells."""
    notebooks = {c.notebook for c in cells}
    if len(notebooks) != 1:
        raise ExportError(
            f"helpers/lessons/{cells[0].module}.py would come from {len(notebooks)} notebooks "
            f"({', '.join(sorted(notebooks))}): one module, one notebook"
        )
    bound: set[str] = set()
    for cell in cells:
        bound |= _check_statements(cell)
    for cell in cells:
        missing = sorted(_free_names(cell.code) - bound)
        if missing:
            raise ExportError(
                f"{cell.notebook} cell {cell.cell_id} uses {', '.join(missing)}, which no exported "
                "cell defines: pass it as a parameter (a notebook's globals are not in the module)"
            )
    (notebook,) = notebooks
    parts = [
        HEADER.format(notebook=notebook),
        f"# Edit the cells marked `{MARKER} {cells[0].module}` there, then run `make export`.",
    ]
    for cell in cells:
        parts += ["", "", CELL_LINE.format(cell_id=cell.cell_id), cell.code]
    return "\n".join(parts) + "\n"


def modules(notebooks: list[Path] | None = None) -> dict[str, str]:
    """``{module name: text}`` for every module the notebooks export."""
    by_module: dict[str, list[ExportedCell]] = {}
    for notebook in notebooks if notebooks is not None else sorted(NOTEBOOKS_DIR.glob("*.ipynb")):
        for cell in exported_cells(notebook):
            by_module.setdefault(cell.module, []).append(cell)
    return {name: render(cells) for name, cells in sorted(by_module.items())}


def stale(expected: dict[str, str], folder: Path = LESSONS_DIR) -> list[str]:
    """What differs between the modules in ``folder`` and ``expected``, each naming its cell."""
    problems = []
    for name, text in expected.items():
        path = folder / f"{name}.py"
        if not path.is_file():
            problems.append(f"{path.name} is missing: run `make export`")
            continue
        on_disk = path.read_text(encoding="utf-8")
        if on_disk == text:
            continue
        first = text.splitlines()[0]
        have, want = _sections(on_disk), _sections(text)
        changed = [cell for cell in want if have.get(cell) != want[cell]]
        changed += [cell for cell in have if cell not in want]
        cells = ", ".join(changed) or "its header"
        problems.append(
            f"helpers/lessons/{path.name} differs from {first.split()[3]} at cell {cells}: edit "
            "the notebook, not the module, then run `make export`"
        )
    generated = {
        p.stem for p in folder.glob("*.py") if p.read_text(encoding="utf-8").startswith("# Generated")
    }
    for name in sorted(generated - set(expected)):
        problems.append(f"{name}.py is generated but no cell exports it any more: delete it")
    return problems


def _sections(text: str) -> dict[str, str]:
    """``{cell id: code}`` of a generated module's text."""
    sections: dict[str, str] = {}
    current = None
    prefix = CELL_LINE.format(cell_id="")
    for line in text.splitlines():
        if line.startswith(prefix):
            current = line[len(prefix) :]
            sections[current] = ""
        elif current is not None:
            sections[current] += line + "\n"
    return {cell: code.strip("\n") for cell, code in sections.items()}


def write(expected: dict[str, str], folder: Path = LESSONS_DIR) -> list[Path]:
    """Write the modules whose text changed; return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    init = folder / "__init__.py"
    if not init.exists():
        init.write_text(INIT)
    written = []
    for name, text in expected.items():
        path = folder / f"{name}.py"
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only say what is stale; exit 1 if any")
    args = parser.parse_args(argv)
    try:
        expected = modules()
    except ExportError as error:
        print(f"export: {error}", file=sys.stderr)
        return 1
    if args.check:
        problems = stale(expected)
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else 0
    for path in write(expected):
        print(f"wrote {path.relative_to(REPO_ROOT)}")
    for problem in stale(expected):  # generated modules no cell exports any more
        print(problem, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
