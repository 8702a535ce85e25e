"""Execute cells as a learner's script would, with ``helpers`` made unimportable (tests/copyable.py).

python copyable_runner.py JOB.json   ->  JOB.out.json beside it
"""

import ast
import importlib.abc
import json
import sys
from pathlib import Path


class NoHelpers(importlib.abc.MetaPathFinder):
    """Refuse ``import helpers``: the course's package is not in a learner's project."""

    def find_spec(self, name, path=None, target=None):
        if name == "helpers" or name.startswith("helpers."):
            raise ModuleNotFoundError(f"copyable cells may not import {name!r}", name=name)
        return None


def shown(value, limit=4000):
    """What a notebook would show for a cell's last expression, as JSON-able data."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)[:limit]


def run_cell(source, namespace):
    """Run one cell; return the value of its last expression (None when it ends otherwise)."""
    tree = ast.parse(source)
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    exec(compile(tree, "<cell>", "exec"), namespace)  # noqa: S102 - the notebook's own cells
    if last is None:
        return None
    return eval(compile(ast.Expression(last.value), "<cell>", "eval"), namespace)  # noqa: S307


def main(job_path):
    sys.meta_path.insert(0, NoHelpers())
    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    namespace = {"__name__": "__main__"}
    results = [shown(run_cell(source, namespace)) for source in job["cells"]]
    values = {name: shown(namespace[name]) for name in job["names"]}
    out = Path(job_path).with_suffix(".out.json")
    out.write_text(json.dumps({"shown": results, "values": values}), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1])
