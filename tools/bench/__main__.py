"""Run one benchmark by name: ``python -m tools.bench <name> [options]``."""

from __future__ import annotations

import argparse
import importlib
import sys

from tools.bench import BENCHMARKS, CannotRun, headline


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__)
    parser.add_argument("name", choices=sorted(BENCHMARKS), help="which benchmark to run")
    args, rest = parser.parse_known_args(argv)
    try:
        module = importlib.import_module(f"tools.bench.{BENCHMARKS[args.name]}")
    except ModuleNotFoundError as error:
        if error.name != f"tools.bench.{BENCHMARKS[args.name]}":
            raise
        print(f"{args.name}: not implemented yet", file=sys.stderr)
        return 2
    try:
        figures = module.run(rest)
    except CannotRun as error:
        print(f"{args.name}: cannot run here: {error}", file=sys.stderr)
        return 3
    print(headline(args.name, figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
