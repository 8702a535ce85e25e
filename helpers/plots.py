"""The pictures of notebook 05: latency-throughput curves, model bars, server-time breakdowns.

Every function takes a DataFrame in the course's result schema (``RESULT_COLUMNS`` plus the
``model``/``config`` labels ``helpers.measure.measure_sweep`` adds), draws with matplotlib
and returns what it drew on, so a notebook cell can end with it. Figures are made outside
pyplot's list of open figures: a cell ending in ``ax.figure`` shows the chart once.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from pandas.api.types import is_bool_dtype, is_numeric_dtype

#: Server-side components of a request's latency, bottom to top in the stacked bars.
BREAKDOWN: dict[str, str] = {
    "server_queue_ms": "queue",
    "server_compute_input_ms": "compute input",
    "server_compute_infer_ms": "compute infer",
    "server_compute_output_ms": "compute output",
}
OUTSIDE = "outside the server (client, network)"
#: Columns that never tell the curves of one table apart (they describe the run as a whole).
_NOT_LABELS = frozenset({"config", "model", "tool", "host", "cpu", "gpu", "date", "launcher"})
#: The latency curves ``latency_throughput`` draws: percentile -> (line style, marker).
_CURVES = {"p50": ("-", "o"), "p99": ("--", "s")}


def new_figure(width: float = 7.0, height: float = 4.5) -> Figure:
    """A new Figure that a notebook shows once, as the result of the cell that returns it (notebook 05).

    Made by pyplot (which sets up Jupyter's inline display) and closed there at once, so the
    inline backend does not show it a second time at the end of the cell.
    """
    figure = plt.figure(figsize=(width, height))
    plt.close(figure)
    return figure


def new_axes(width: float = 7.0, height: float = 4.5) -> Axes:
    """Axes on a ``new_figure`` (notebook 05)."""
    return new_figure(width, height).subplots()


def group_label(frame: pd.DataFrame, by: str = "config") -> pd.Series:
    """The label of each row: ``by`` where it is filled in, else the model, else "run" (notebook 05).

    Where one table mixes tools (the same config measured by perf_analyzer and by the
    fallback generator), the tool is added, so each makes its own curve; where a group still
    holds a concurrency level twice, the text columns that tell its rows apart are added
    (e.g. ``shared_memory=system``).
    """
    labels = pd.Series("run", index=frame.index)
    if "model" in frame.columns:
        labels = frame["model"].fillna("run").astype(str)
    if by in frame.columns:
        own = frame[by].fillna("").astype(str)
        labels = own.where(own != "", labels)
    if "tool" in frame.columns and frame["tool"].nunique() > 1:
        labels = labels + " (" + frame["tool"].astype(str) + ")"
    for _, rows in frame.groupby(labels, sort=False):
        if not rows["concurrency"].duplicated().any():
            continue
        apart = [
            column
            for column in rows.columns
            if column not in _NOT_LABELS
            and (not is_numeric_dtype(rows[column]) or is_bool_dtype(rows[column]))
            and rows[column].nunique() > 1
        ]
        for column in apart:
            labels.loc[rows.index] += f", {column}=" + rows[column].astype(str)
    return labels


def latency_throughput(
    frame: pd.DataFrame,
    ax: Axes | None = None,
    label: str = "",
    annotate: bool = True,
    color_offset: int = 0,
    alpha: float = 1.0,
) -> Axes:
    """Latency (p50, p99) against throughput, one curve per ``group_label``, concurrency annotated (notebook 05).

    ``label``, ``color_offset`` and ``alpha`` let ``plot_against`` draw several runs on one ``ax``.
    """
    ax = ax or new_axes()
    for index, (name, rows) in enumerate(frame.groupby(group_label(frame), sort=False)):
        rows = rows.sort_values("concurrency")
        color = f"C{(index + color_offset) % 10}"
        for percentile, (linestyle, marker) in _CURVES.items():
            ax.plot(
                rows["throughput_infer_per_s"],
                rows[f"latency_{percentile}_ms"],
                linestyle=linestyle,
                marker=marker,
                color=color,
                alpha=alpha,
                label=" · ".join(part for part in (label, str(name), percentile) if part),
            )
        if annotate:
            for _, row in rows.iterrows():
                ax.annotate(
                    f"c={int(row['concurrency'])}",
                    (row["throughput_infer_per_s"], row["latency_p50_ms"]),
                    textcoords="offset points",
                    xytext=(4, -10),
                    fontsize=8,
                    color=color,
                )
    ax.set(xlabel="throughput (inferences/s)", ylabel="latency (ms)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def compare_bars(frame: pd.DataFrame, by: str = "model") -> Figure:
    """Throughput and p50/p99 latency side by side, one group of bars per model (notebook 05)."""
    labels = group_label(frame, by).tolist()
    figure = new_figure(10, 4)
    left, right = figure.subplots(1, 2)
    positions = np.arange(len(labels))
    bars = left.bar(positions, frame["throughput_infer_per_s"], color=[f"C{i}" for i in positions])
    left.bar_label(bars, fmt="%.1f", fontsize=8)
    left.set(ylabel="throughput (inferences/s)", title="throughput (higher is better)")
    width = 0.38
    for offset, percentile in ((-width / 2, "p50"), (width / 2, "p99")):
        bars = right.bar(
            positions + offset,
            frame[f"latency_{percentile}_ms"],
            width,
            label=percentile,
            hatch="" if percentile == "p50" else "//",
            color=[f"C{i}" for i in positions],
            edgecolor="black",
            linewidth=0.5,
        )
        right.bar_label(bars, fmt="%.0f", fontsize=8)
    right.set(ylabel="latency (ms)", title="latency (lower is better)")
    right.legend(
        handles=[
            Patch(facecolor="white", edgecolor="black", label="p50"),
            Patch(facecolor="white", edgecolor="black", hatch="//", label="p99"),
        ],
        fontsize=8,
    )
    for ax in (left, right):
        ax.set_xticks(positions, labels, rotation=15, ha="right", fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
    figure.tight_layout()
    return figure


def server_breakdown(frame: pd.DataFrame, by: str = "config") -> Axes:
    """Stacked bars of a request's average time: queue, compute input/infer/output, the rest (notebook 05).

    The rest of the average client latency (client, network, (de)serialisation) is the grey
    last segment.
    """
    labels = group_label(frame, by).tolist()
    ax = new_axes(8, 0.55 * len(labels) + 1.6)
    positions = np.arange(len(labels))
    left = np.zeros(len(labels))
    for index, (column, name) in enumerate(BREAKDOWN.items()):
        values = frame[column].fillna(0).to_numpy(dtype=float)
        ax.barh(positions, values, left=left, label=name, color=f"C{index}")
        left += values
    rest = np.clip(frame["latency_avg_ms"].to_numpy(dtype=float) - left, 0, None)
    ax.barh(positions, rest, left=left, label=OUTSIDE, color="0.85", hatch="..")
    left += rest
    for position, total in zip(positions, left):
        ax.annotate(
            f"{total:.0f} ms",
            (total, position),
            xytext=(3, -3),
            textcoords="offset points",
            fontsize=8,
        )
    ax.set_yticks(positions, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set(xlabel="average time per request (ms)", xlim=(0, max(left.max(), 1) * 1.15))
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(True, axis="x", alpha=0.3)
    return ax
