"""Run a command while every core is kept busy, as on a laptop with other work or a shared CI runner.

    python -m tools.busy -- .venv/bin/python -m pytest tests/test_measure.py
    python -m tools.busy --processes 2 -- make test

Starts ``--processes`` busy-loop processes (default: one per core), each pinned to its own
core where the system allows it, runs the command, stops them (also when the command fails
or is interrupted) and exits with the command's exit status. Tests that read timing- or
counter-dependent results from a live server must pass this way too (``make test-busy``).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys


def spin(core: int | None) -> None:
    """Keep one core busy until killed."""
    if core is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core})
    while True:
        pass


def run_busy(command: list[str], processes: int) -> int:
    """Run ``command`` with ``processes`` busy loops beside it; return its exit status."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    spinners = [
        multiprocessing.Process(target=spin, args=(cores[i % len(cores)] if cores else None,))
        for i in range(processes)
    ]
    for spinner in spinners:
        spinner.daemon = True
        spinner.start()
    try:
        return subprocess.run(command, check=False).returncode
    finally:
        for spinner in spinners:
            spinner.kill()
        for spinner in spinners:
            spinner.join()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--processes", type=int, default=os.cpu_count() or 1, help="busy loops (default: cores)"
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --, e.g. -- pytest tests/")
    if args.processes < 1:
        parser.error(f"--processes must be at least 1, not {args.processes}")
    return run_busy(command, args.processes)


if __name__ == "__main__":
    sys.exit(main())
