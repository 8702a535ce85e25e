"""Save measured tables as CSV with where/when they were measured, and plot runs together (notebook 05).

Saved CSVs are ``<name>-<host>-<date>.csv`` (a second save on the same machine and day replaces
the first): yours under ``build/results/``, the course's reference runs under ``docs/results/``.
"""

from __future__ import annotations

import platform
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.ticker import NullFormatter, ScalarFormatter

from helpers.machine import cpu_name, gpu_names
from helpers.paths import BUILD_DIR, REPO_ROOT
from helpers.perf_analyzer import RESULT_COLUMNS
from helpers.plots import group_label, latency_throughput, new_axes

#: Where ``save_results`` writes, and where the course keeps reference runs to compare with.
RESULTS_DIR: Path = BUILD_DIR / "results"
REFERENCE_DIR: Path = REPO_ROOT / "docs" / "results"
#: Columns that say where, when and how a row was measured.
MACHINE_COLUMNS: tuple[str, ...] = ("host", "cpu", "gpu", "date", "tool", "launcher")
_SAFE = re.compile(r"[^A-Za-z0-9_.]+")


def machine_info(when: datetime | None = None) -> dict[str, str]:
    """``host``, ``cpu``, ``gpu`` and ``date`` (ISO, local time zone) of this machine (notebook 05)."""
    when = when or datetime.now().astimezone()
    return {
        "host": platform.node() or "unknown-host",
        "cpu": cpu_name(),
        "gpu": gpu_names(),
        "date": when.isoformat(timespec="seconds"),
    }


def save_results(
    frame: pd.DataFrame,
    name: str,
    directory: str | Path | None = None,
    launcher: str | None = None,
    when: datetime | None = None,
    host: str | None = None,
) -> Path:
    """Write ``frame`` with the machine columns to ``build/results/<name>-<host>-<date>.csv`` (notebook 05).

    ``frame`` must hold ``RESULT_COLUMNS`` (``tool`` included); ``launcher`` fills the column
    when the frame has none (``measure_sweep`` adds it). ``host`` replaces this machine's
    name as its label (a rented machine's name says nothing to a reader); characters unsafe
    in a file name become ``_`` there.
    """
    missing = [c for c in RESULT_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"not a result table: it lacks {missing}")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"result names are letters, digits, '_', '.' and '-': got {name!r}")
    when = when or datetime.now().astimezone()
    info = machine_info(when)
    if host:
        info["host"] = host
    table = frame.assign(**info)
    if "launcher" not in table.columns or launcher is not None:
        table["launcher"] = launcher or ""
    safe_host = _SAFE.sub("_", info["host"]).strip("_") or "unknown-host"
    path = Path(directory or RESULTS_DIR) / f"{name}-{safe_host}-{when:%Y-%m-%d}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    ordered = [*RESULT_COLUMNS, *(c for c in table.columns if c not in RESULT_COLUMNS)]
    table[ordered].to_csv(path, index=False)
    return path


def load_results(path: str | Path) -> pd.DataFrame:
    """Read a CSV ``save_results`` wrote (here or on another machine); check its columns (notebook 05)."""
    frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
    missing = [c for c in (*RESULT_COLUMNS, *MACHINE_COLUMNS) if c not in frame.columns]
    if missing:
        raise ValueError(f"{path} is not a saved result table: it lacks {missing}")
    for column in MACHINE_COLUMNS:
        frame[column] = frame[column].fillna("").astype(str)
    return frame


def find_results(
    name: str,
    directories: Iterable[str | Path] = (RESULTS_DIR, REFERENCE_DIR),
    exclude: Iterable[str | Path] = (),
) -> list[Path]:
    """Saved result CSVs of sweep ``name``, newest first (notebook 05)."""
    skip = {Path(p).resolve() for p in exclude}
    found = []
    for folder in directories:
        found += [p for p in Path(folder).glob(f"{name}-*.csv") if p.resolve() not in skip]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def dated_runs(
    name: str, directory: str | Path = REFERENCE_DIR, suffix: str = ".csv"
) -> list[Path]:
    """Files ``<name>-<host>-<yyyy-mm-dd><suffix>``, newest date first (notebook 05).

    A name that goes on after the date (``...-2026-11-28-mps.csv``) is a variant run and is
    left out: the newest plain run is the reference.
    """
    dated = re.compile(rf"{re.escape(name)}-.+-(\d{{4}}-\d{{2}}-\d{{2}}){re.escape(suffix)}")
    found = [p for p in Path(directory).glob(f"{name}-*{suffix}") if dated.fullmatch(p.name)]
    return sorted(found, key=lambda path: dated.fullmatch(path.name)[1], reverse=True)


def run_label(frame: pd.DataFrame) -> str:
    """Where, on what, when and with which tool a table was measured, for a legend (notebook 05)."""
    first = frame.iloc[0] if len(frame) else pd.Series(dtype=object)

    def value(column: str) -> str:
        return str(first.get(column, "") or "")

    host = value("host") or platform.node()
    gpu = value("gpu")
    hardware = gpu if gpu and gpu != "none" else value("cpu") or cpu_name()
    date = value("date")[:16].replace("T", " ") or "now"
    tools = frame["tool"].dropna().astype(str).unique() if "tool" in frame.columns else []
    tool = " + ".join(tools)
    return ", ".join(part for part in (host, hardware, date, tool) if part)


def plot_against(
    saved: Sequence[str | Path | pd.DataFrame],
    current: pd.DataFrame,
    kind: str = "curve",
    log: bool = False,
) -> Axes:
    """Plot saved runs (CSV paths or frames) and the current run on one chart (notebook 05).

    ``kind="curve"``: latency p50/p99 against throughput, saved runs faded;
    ``kind="bars"``: throughput per configuration, one bar per run. Legends say where and
    when each run was measured (``run_label``). ``log`` puts the curve's axes on log scales,
    for runs orders of magnitude apart (a CPU next to a GPU).
    """
    if kind not in ("curve", "bars"):
        raise ValueError(f"kind must be 'curve' or 'bars', got {kind!r}")
    runs = [s if isinstance(s, pd.DataFrame) else load_results(s) for s in saved]
    labels = [f"saved: {run_label(run)}" for run in runs]
    runs.append(current)
    labels.append(f"this run: {run_label(current)}")
    if kind == "curve":
        ax = new_axes(8, 5)
        offset = 0
        for index, (run, label) in enumerate(zip(runs, labels)):
            latest = index == len(runs) - 1
            latency_throughput(
                run,
                ax=ax,
                label=label,
                annotate=latest,
                color_offset=offset,
                alpha=1.0 if latest else 0.55,
            )
            offset += group_label(run).nunique()
        if log:
            ax.set_xscale("log")
            ax.set_yscale("log")
            for axis in (ax.xaxis, ax.yaxis):
                axis.set_major_formatter(ScalarFormatter())
                axis.set_minor_formatter(NullFormatter())
    else:
        throughput = [
            pd.DataFrame(
                {"group": group_label(run), "run": label, "x": run["throughput_infer_per_s"]}
            )
            for run, label in zip(runs, labels)
        ]
        wide = pd.concat(throughput).pivot_table(
            index="group", columns="run", values="x", sort=False
        )
        wide = wide[[label for label in labels if label in wide.columns]]
        ax = wide.plot.barh(ax=new_axes(8, 0.3 * len(wide) * len(labels) + 1.5))
        ax.invert_yaxis()
        ax.set(xlabel="throughput (inferences/s)", ylabel="")
        ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("this run next to saved runs" if len(runs) > 1 else "this run (no saved run)")
    return ax
