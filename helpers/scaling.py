"""Replicas' request counts, the committed autoscaling target and the plots of notebook 10.

The load that runs while a replica is killed, restarted or replaced (``BackgroundLoad``,
``kill_and_restart``, ``rolling_replace``) and the autoscaling signal read the way
prometheus-adapter and the Horizontal Pod Autoscaler read it (``queue_signal_over_time``) are
notebook 10's cells, generated into ``helpers.lessons.replicas``.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from helpers.paths import REPO_ROOT
from helpers.statistics import model_stats


def model_successes(server: Any, model: str) -> int:
    """Successful inference requests of ``model`` on one replica (its statistics API)."""
    with server.http_client() as client:
        return model_stats(client, model).success_count


def committed_autoscaling(values_file: str | None = None) -> dict[str, Any]:
    """The ``autoscaling`` block of the committed Helm chart's values.yaml (notebook 10)."""
    import yaml

    path = values_file or REPO_ROOT / "deploy" / "helm" / "triton" / "values.yaml"
    with open(path) as handle:
        return yaml.safe_load(handle)["autoscaling"]


def plot_timeline(
    requests: pd.DataFrame, events: dict[str, float], title: str, bin_s: float = 0.25
):
    """Successful and failed requests per second over time, with events as vertical lines."""
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(9, 3))
    edges = [i * bin_s for i in range(int(requests["end"].max() / bin_s) + 2)]
    for ok, colour, label in ((True, "tab:green", "succeeded"), (False, "tab:red", "failed")):
        done = requests[requests["ok"] == ok]["end"]
        if len(done):
            axis.hist(
                done,
                bins=edges,
                color=colour,
                alpha=0.7,
                label=label,
                weights=[1 / bin_s] * len(done),
            )
    for name, at in events.items():
        axis.axvline(at, color="black", linestyle="--", linewidth=1)
        axis.text(at, axis.get_ylim()[1] * 0.95, f" {name}", fontsize=8, va="top")
    axis.set(xlabel="seconds since the load started", ylabel="requests/s", title=title)
    axis.legend(loc="lower right")
    figure.tight_layout()
    return figure


def plot_signal(signal: pd.DataFrame, target_ms: float):
    """The queue-time signal three ways and the HPA's desired replicas over time."""
    import matplotlib.pyplot as plt

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
    top.plot(
        signal["t"], signal["adapter_rule_ms"], "o-", label="course rule on /metrics (sum/sum)"
    )
    top.plot(signal["t"], signal["stats_api_ms"], "x--", label="statistics API")
    top.plot(
        signal["t"], signal["chart_rule_ms"], "s:", label="k8s-onprem chart rule (avg per model)"
    )
    top.axhline(target_ms, color="grey", linestyle="--", label=f"HPA target {target_ms:g} ms")
    top.set(ylabel="queue ms / request", title="Autoscaling signal under rising load")
    top.legend(fontsize=8)
    bottom.step(signal["t"], signal["desired_replicas"], where="post")
    for concurrency, start in signal.groupby("concurrency")["t"].min().items():
        bottom.annotate(f"{concurrency} clients", (start, 0.3), fontsize=8)
    bottom.set(
        xlabel="seconds", ylabel="desired replicas", ylim=(0, signal["desired_replicas"].max() + 1)
    )
    figure.tight_layout()
    return figure
