"""helpers.results and helpers.plots: saved CSVs with machine columns, and runs plotted together."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from helpers import plots, results  # noqa: E402
from helpers.perf_analyzer import RESULT_COLUMNS  # noqa: E402

WHEN = datetime(2026, 11, 24, 21, 30, tzinfo=timezone.utc)


def _frame(config: str = "dynamic batching", scale: float = 1.0) -> pd.DataFrame:
    levels = [1, 2, 4]
    frame = pd.DataFrame({column: np.nan for column in RESULT_COLUMNS}, index=range(3))
    frame["concurrency"] = levels
    frame["throughput_infer_per_s"] = [8.0 * scale, 12.0 * scale, 14.0 * scale]
    for name, factor in (("avg", 1.0), ("p50", 1.0), ("p90", 1.2), ("p95", 1.3), ("p99", 1.5)):
        frame[f"latency_{name}_ms"] = [c * 100.0 * factor / scale for c in levels]
    frame["server_queue_ms"] = [1.0, 40.0, 150.0]
    frame["server_compute_input_ms"] = 1.0
    frame["server_compute_infer_ms"] = 80.0
    frame["server_compute_output_ms"] = 5.0
    frame["tool"] = "fallback generator"
    frame["model"] = "yolo11n_onnx"
    frame["config"] = config
    frame["launcher"] = "embedded"
    return frame


def test_save_writes_name_host_date_and_machine_columns(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(results.platform, "node", lambda: "lab box/1")
    monkeypatch.setattr(results, "gpu_names", lambda: "none")
    path = results.save_results(_frame(), "concurrency", directory=tmp_path, when=WHEN)
    assert path == tmp_path / "concurrency-lab_box_1-2026-11-24.csv"
    saved = results.load_results(path)
    assert list(saved.columns[: len(RESULT_COLUMNS)]) == list(RESULT_COLUMNS)
    assert set(results.MACHINE_COLUMNS) <= set(saved.columns)
    row = saved.iloc[0]
    assert row["host"] == "lab box/1"
    assert row["date"] == "2026-11-24T21:30:00+00:00"
    assert row["gpu"] == "none" and row["cpu"].endswith(f"{os.cpu_count()} cores")
    assert (row["tool"], row["launcher"], row["config"]) == (
        "fallback generator",
        "embedded",
        "dynamic batching",
    )
    pd.testing.assert_series_equal(
        saved["throughput_infer_per_s"], _frame()["throughput_infer_per_s"]
    )


def test_save_refuses_tables_and_names_it_cannot_use(tmp_path: Path):
    with pytest.raises(ValueError, match="lacks"):
        results.save_results(pd.DataFrame({"x": [1]}), "bad", directory=tmp_path)
    with pytest.raises(ValueError, match="result names"):
        results.save_results(_frame(), "../escape", directory=tmp_path)


def test_load_refuses_a_csv_without_machine_columns(tmp_path: Path):
    path = tmp_path / "plain.csv"
    _frame().drop(columns=["launcher"]).to_csv(path, index=False)
    with pytest.raises(ValueError, match="launcher"):
        results.load_results(path)


def test_find_results_newest_first_by_name_with_exclusions(tmp_path: Path):
    mine, reference = tmp_path / "build", tmp_path / "docs"
    old = results.save_results(_frame(), "batching", directory=reference, when=WHEN)
    os.utime(old, (1_000_000, 1_000_000))
    new = results.save_results(_frame(), "batching", directory=mine)
    other = results.save_results(_frame(), "concurrency", directory=mine)
    found = results.find_results("batching", directories=[mine, reference])
    assert found == [new, old]
    assert results.find_results("batching", directories=[mine, reference], exclude=[new]) == [old]
    assert results.find_results("concurrency", directories=[mine]) == [other]
    assert results.find_results("batching", directories=[tmp_path / "absent"]) == []


def test_dated_runs_newest_date_first_without_variant_runs(tmp_path: Path):
    for name in [
        "gpu-lent-h100-2026-11-25.csv",
        "gpu-lent_h200-2026-11-28.csv",
        "gpu-lent_h200-2026-11-28-mps.csv",  # a variant: the name goes on after the date
        "gpu-lent_h200-2026-11-28.console.txt",
        "gpu_tools-lent-h100-2026-11-30.csv",  # another sweep
        "perftools-lent-h100-2026-11-29.csv",
    ]:
        (tmp_path / name).write_text("")
    assert [p.name for p in results.dated_runs("gpu", tmp_path)] == [
        "gpu-lent_h200-2026-11-28.csv",
        "gpu-lent-h100-2026-11-25.csv",
    ]
    consoles = results.dated_runs("gpu", tmp_path, suffix=".console.txt")
    assert [p.name for p in consoles] == ["gpu-lent_h200-2026-11-28.console.txt"]


def test_run_label_names_host_hardware_date_and_tool():
    saved = _frame().assign(
        host="gpu-box", cpu="Xeon, 32 cores", gpu="NVIDIA H100", date="2026-11-24T21:30:00+00:00"
    )
    assert results.run_label(saved) == "gpu-box, NVIDIA H100, 2026-11-24 21:30, fallback generator"
    assert "Xeon" in results.run_label(saved.assign(gpu="none"))


def test_plot_against_draws_saved_runs_and_the_current_one(tmp_path: Path):
    saved = results.save_results(_frame(scale=2.0), "concurrency", directory=tmp_path, when=WHEN)
    ax = results.plot_against([saved], _frame())
    labels = [line.get_label() for line in ax.get_lines()]
    assert len(labels) == 4  # p50 and p99 for each of the two runs
    assert sum(label.startswith("saved: ") for label in labels) == 2
    assert sum(label.startswith("this run: ") for label in labels) == 2
    assert any("2026-11-24 21:30" in label for label in labels)
    saved_p50 = ax.get_lines()[0]
    np.testing.assert_allclose(saved_p50.get_xdata(), [16.0, 24.0, 28.0])
    plt.close("all")


def test_plot_against_bars_and_with_nothing_saved():
    ax = results.plot_against([], _frame("off").iloc[[2]], kind="bars")
    assert ax.get_title() == "this run (no saved run)"
    assert [bar.get_width() for bar in ax.patches] == [14.0]
    with pytest.raises(ValueError, match="kind"):
        results.plot_against([], _frame(), kind="pie")
    plt.close("all")


def test_server_breakdown_stacks_to_the_average_latency():
    frame = pd.concat([_frame("on").iloc[[0]], _frame("off").iloc[[2]]], ignore_index=True)
    ax = plots.server_breakdown(frame)
    totals: dict[float, float] = {}
    for bar in ax.patches:
        totals[bar.get_y()] = totals.get(bar.get_y(), 0.0) + bar.get_width()
    assert sorted(totals.values()) == pytest.approx(sorted(frame["latency_avg_ms"]))
    assert [t.get_text() for t in ax.get_yticklabels()] == ["on", "off"]
    plt.close("all")


def test_compare_bars_and_curve_one_group_per_label():
    frame = pd.concat([_frame("a").iloc[[1]], _frame("b").iloc[[1]]]).assign(
        model=["yolo11n_onnx", "yolo11n_torchscript"]
    )
    figure = plots.compare_bars(frame)
    left, right = figure.axes
    assert [t.get_text() for t in left.get_xticklabels()] == [
        "yolo11n_onnx",
        "yolo11n_torchscript",
    ]
    assert len(right.patches) == 4  # p50 and p99 per model
    ax = plots.latency_throughput(_frame())
    assert [line.get_label() for line in ax.get_lines()] == [
        "dynamic batching · p50",
        "dynamic batching · p99",
    ]
    plt.close("all")


def test_mixed_tools_and_settings_make_separate_curves():
    perf = _frame("gpu").assign(tool="perf_analyzer", shared_memory="system")
    perf_none = _frame("gpu").assign(tool="perf_analyzer", shared_memory="none")
    fallback = _frame("gpu").assign(shared_memory="none")
    frame = pd.concat([perf, perf_none, fallback], ignore_index=True)
    labels = plots.group_label(frame)
    assert sorted(labels.unique()) == [
        "gpu (fallback generator)",
        "gpu (perf_analyzer), shared_memory=none",
        "gpu (perf_analyzer), shared_memory=system",
    ]
    ax = results.plot_against([frame.assign(host="gpu-box")], _frame(), log=True)
    assert len(ax.get_lines()) == 8  # (3 saved curves + this run) x (p50, p99)
    assert ax.get_xscale() == ax.get_yscale() == "log"
    assert "perf_analyzer + fallback generator" in ax.get_lines()[0].get_label()
    plt.close("all")
