"""Scrape and read Triton's Prometheus metrics (introduced in notebook 04).

Triton publishes counters per model and version on ``http://<host>:<port>/metrics`` in the
Prometheus text format, the page Prometheus itself scrapes. They only ever grow, so what a
burst of requests did is the difference between two scrapes:

    before = model_metrics(scrape(server.metrics_url), "yolo11n_onnx")
    ...  # send requests
    expected = before["nv_inference_request_success"] + requests_sent
    after = wait_for_model_metrics(server.metrics_url, "yolo11n_onnx", expected)
    metrics_delta(before, after)
"""

from __future__ import annotations

import urllib.request
from typing import TYPE_CHECKING

import pandas as pd
from prometheus_client.parser import text_string_to_metric_families

from helpers.statistics import PHASES, wait_for

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: The per-model counters the course looks at, with what each one counts.
KEY_METRICS: dict[str, str] = {
    "nv_inference_request_success": "successful requests",
    "nv_inference_request_failure": "failed requests",
    "nv_inference_count": "inferences (images, batch dimension included)",
    "nv_inference_exec_count": "model executions (batches run)",
    "nv_inference_request_duration_us": "request time in the server, end to end (us)",
    "nv_inference_queue_duration_us": "time requests waited in the queue (us)",
    "nv_inference_compute_input_duration_us": "time copying inputs in (us)",
    "nv_inference_compute_infer_duration_us": "time running the model (us)",
    "nv_inference_compute_output_duration_us": "time copying outputs out (us)",
}
#: Requests the response cache answered (counted as successes, not as inferences).
CACHE_HITS = "nv_cache_num_hits_per_model"


def scrape(url: str, timeout: float = 5.0) -> str:
    """GET the metrics page (``TritonServer.metrics_url``) as text (introduced in notebook 04)."""
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        return reply.read().decode()


def parse_metrics(text: str) -> pd.DataFrame:
    """Every sample of a Prometheus text page: metric, type, labels, value (notebook 04).

    ``metric`` is the family name (``prometheus_client`` adds ``_total`` to counter samples;
    the family keeps the name Triton wrote). ``model`` and ``version`` are split out of the
    labels for convenience (empty for server-wide metrics).
    """
    rows = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            labels = dict(sample.labels)
            rows.append(
                {
                    "metric": family.name,
                    "type": family.type,
                    "model": labels.pop("model", ""),
                    "version": labels.pop("version", ""),
                    "labels": labels,
                    "value": float(sample.value),
                }
            )
    return pd.DataFrame(rows, columns=["metric", "type", "model", "version", "labels", "value"])


def model_metrics(
    page: str | pd.DataFrame, model: str, metrics: list[str] | None = None
) -> pd.Series:
    """One model's counters, summed over versions and other labels (notebook 04).

    ``page`` is the scraped text or ``parse_metrics`` of it; ``metrics`` defaults to
    ``KEY_METRICS``. A counter the page does not have yet reads 0.
    """
    frame = parse_metrics(page) if isinstance(page, str) else page
    names = list(metrics or KEY_METRICS)
    rows = frame[(frame["model"] == model) & frame["metric"].isin(names)]
    return rows.groupby("metric")["value"].sum().reindex(names, fill_value=0.0).rename(model)


def wait_for_model_metrics(
    url: str, model: str, success: float, timeout: float = 10.0
) -> pd.Series:
    """Scrape until the model's success counter reaches ``success``, or ``timeout`` s (notebook 04).

    Triton counts a request a moment after the client has its response, so a scrape right
    after the last response can miss the last requests; it also counts a request's success
    and its inferences one after the other, so the scrape must also show at least one
    inference per successful request that was not a cache hit. After ``timeout`` the last
    scrape is returned with a ``StatisticsWarning``.
    """

    def read() -> tuple[pd.Series, float]:
        frame = parse_metrics(scrape(url))
        return model_metrics(frame, model), model_metrics(frame, model, [CACHE_HITS])[CACHE_HITS]

    def done(read_back: tuple[pd.Series, float]) -> bool:
        counters, hits = read_back
        counted = counters["nv_inference_request_success"]
        return counted >= success and counters["nv_inference_count"] >= counted - hits

    what = f"{model}'s metrics counting {success:g} successful requests"
    return wait_for(read, done, what, timeout)[0]


def metrics_delta(before: pd.Series, after: pd.Series) -> pd.DataFrame:
    """Before, after and the increase of each counter, with what it counts (notebook 04)."""
    table = pd.DataFrame({"before": before, "after": after})
    table["increase"] = table["after"] - table["before"]
    table["what it counts"] = [KEY_METRICS.get(name, "") for name in table.index]
    return table


def per_request_us(delta: pd.DataFrame) -> pd.Series:
    """Average microseconds per request in each phase, from a ``metrics_delta`` (notebook 04)."""
    requests = max(delta.loc["nv_inference_request_success", "increase"], 1.0)
    return pd.Series(
        {
            phase.replace("_", " "): delta.loc[f"nv_inference_{phase}_duration_us", "increase"]
            / requests
            for phase in PHASES
        },
        name="us per request",
    )


def plot_metrics_delta(delta: pd.DataFrame, title: str = "") -> Figure:
    """Counts that grew (left) and the per-request time split they imply (right) (notebook 04)."""
    import matplotlib.pyplot as plt

    labels = {
        "nv_inference_request_success": "requests\n(request_success)",
        "nv_inference_count": "inferences\n(count)",
        "nv_inference_exec_count": "executions\n(exec_count)",
    }
    counts = delta.loc[list(labels), "increase"]
    split = per_request_us(delta) / 1000
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.2))
    left.barh(list(labels.values()), counts.values)
    left.set(xlabel="increase during the burst", title="Counters")
    right.barh(split.index, split.values, color="tab:orange")
    right.set(xlabel="ms per request (average)", title="Server time, from the duration counters")
    for axis in (left, right):
        axis.invert_yaxis()
        axis.grid(axis="x", alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
