"""The README's pictures, rendered from the current code: ``python -m tools.screenshots``.

Writes into ``docs/screenshots/`` (``--out`` to change it):

* ``jupyterlab-environment-report.png``: notebook 00 opened in JupyterLab in headless
  Chromium, run through the menu (Run → Run All Cells), scrolled to its environment report;
* ``netron-yolo11n.png``: the YOLO11n ONNX graph in Netron, served as notebook 01 does;
* ``latency-throughput.png``: notebook 05's first figure, latency against throughput for a
  concurrency sweep of YOLO11n ONNX on the embedded Triton, measured on this machine now.

``tests/test_browser.py`` calls the first two functions too (writing into
``build/screenshots/``), so the pictures come from the code the tests check. The committed
notebooks are never written to: JupyterLab works on a copy in a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from helpers.netron_view import NetronServer
from helpers.paths import MODEL_REPOSITORY, REPO_ROOT
from tools.browser import (
    CellState,
    JupyterLabServer,
    chromium_page,
    collapse_left_sidebar,
    netron_node_types,
    open_netron,
    open_notebook,
    run_all_cells,
    select_netron_node,
)

if TYPE_CHECKING:
    from playwright.sync_api import Page

#: Where ``python -m tools.screenshots`` writes the README's pictures.
DOCS_SCREENSHOTS: Path = REPO_ROOT / "docs" / "screenshots"
ENVIRONMENT_NOTEBOOK: Path = REPO_ROOT / "notebooks" / "00_environment_check.ipynb"
ONNX_MODEL = "yolo11n_onnx"
#: Largest PNG written; bigger renders are reduced to a 256-colour palette.
MAX_PNG_BYTES = 300_000

# The rows of the HTML table in one code cell's outputs, each as the texts of its th/td cells.
_CELL_TABLE = """(index) => {
  const cells = document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell');
  const table = cells[index] && cells[index].querySelector('.jp-OutputArea-output table');
  if (!table) return [];
  return [...table.querySelectorAll('tbody tr')]
    .map(row => [...row.querySelectorAll('th, td')].map(cell => cell.textContent.trim()));
}"""


@dataclass(frozen=True)
class NotebookRun:
    """What JupyterLab showed after running the environment check through its menu."""

    cells: list[CellState]
    report: dict[str, str]  # check -> status, as the report table in the page shows them
    process_ids: list[int]  # JupyterLab and its kernel, while they ran
    seconds: float


def environment_report(
    screenshot: Path, chromium: str | None = None, timeout_s: float = 180.0
) -> NotebookRun:
    """Run notebook 00 in JupyterLab (a copy), read its report from the page, take a screenshot."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="jupyterlab-root-") as folder:
        copy = Path(folder) / ENVIRONMENT_NOTEBOOK.name
        shutil.copyfile(ENVIRONMENT_NOTEBOOK, copy)
        with JupyterLabServer(folder) as lab, chromium_page(chromium, height=1000) as page:
            open_notebook(page, lab, copy.name)
            cells = run_all_cells(page, timeout_s)
            process_ids = lab.process_ids()
            report_cell = next(
                i for i, cell in enumerate(cells) if "environment_report(" in cell.source
            )
            rows = page.evaluate(_CELL_TABLE, report_cell)
            collapse_left_sidebar(page)
            heading = page.locator(".jp-MarkdownCell", has_text="The report").first
            heading.evaluate("cell => cell.scrollIntoView({block: 'start'})")
            page.wait_for_timeout(300)  # let the scroll settle before the picture
            _screenshot(page, screenshot)
    return NotebookRun(
        cells=cells,
        report={row[0]: row[1] for row in rows if len(row) > 1},
        process_ids=process_ids,
        seconds=time.monotonic() - started,
    )


@dataclass(frozen=True)
class NetronView:
    """What Netron drew: operators by type, and the sidebar after clicking a node."""

    node_types: Counter[str]
    sidebar: str
    seconds: float


def netron_graph(
    model: Path, screenshot: Path, chromium: str | None = None, select: str = "Conv"
) -> NetronView:
    """Serve ``model`` with Netron as notebook 01 does, count the drawn operators, click the first
    ``select`` node to show its attributes, and take a screenshot."""
    started = time.monotonic()
    with NetronServer(model) as netron, chromium_page(chromium, width=1280, height=800) as page:
        open_netron(page, netron.url)
        types = netron_node_types(page)
        sidebar = select_netron_node(page, select)
        page.wait_for_timeout(300)  # the graph slides to keep the selected node in view
        _screenshot(page, screenshot)
    return NetronView(node_types=types, sidebar=sidebar, seconds=time.monotonic() - started)


def latency_throughput(
    screenshot: Path, concurrency: Sequence[int] = (1, 2, 4), window_s: float = 2.0
) -> pd.DataFrame:
    """Measure notebook 05's concurrency sweep of YOLO11n ONNX on Triton now and save its figure."""
    from helpers.lessons.yolo_client import preprocess
    from helpers.loadgen import busy_cpu_seconds, cpu_seconds
    from helpers.measure import choose_tool, measure_sweep, missing_reason, payload_for
    from helpers.plots import latency_throughput as plot_latency_throughput
    from helpers.results import machine_info
    from helpers.server import TritonServer
    from helpers.yolo import load_image, sample_image_path

    if missing_reason(ONNX_MODEL):
        _export_onnx()
    images, _ = preprocess(load_image(sample_image_path("bus.jpg")))
    tool = choose_tool("auto")
    with TritonServer(models=[ONNX_MODEL]) as server:
        before = (busy_cpu_seconds(), cpu_seconds(os.getpid()), time.monotonic())
        sweep = measure_sweep(
            server,
            ONNX_MODEL,
            payload_for(ONNX_MODEL, images),
            list(concurrency),
            tool=tool,
            config="as shipped",
            warmup_s=1.0,
            window_s=window_s,
            max_windows=3,
            progress=False,
        )
        after = (busy_cpu_seconds(), cpu_seconds(os.getpid()), time.monotonic())
    # CPU the rest of the machine used meanwhile: all busy time minus ours, the server included.
    other_cores = ((after[0] - before[0]) - (after[1] - before[1])) / (after[2] - before[2])
    ax = plot_latency_throughput(sweep)
    ax.set_title(f"YOLO11n ONNX, as shipped (dynamic batching, 1 instance), {tool.name}")
    machine = machine_info()
    note = (
        f"{sweep['launcher'].iloc[0]} Triton on {machine['cpu']}, GPU: {machine['gpu']}, "
        f"{machine['date'][:10]}"
    )
    if other_cores > 0.25:  # other work competed with the server for the same cores
        note += f"; other processes used {other_cores:.1f} cores meanwhile"
        warnings.warn(f"the machine was not quiet: {note}", stacklevel=2)
    ax.figure.text(0.01, -0.01, note, fontsize=7, color="0.4", va="top")
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    ax.figure.savefig(screenshot, dpi=100, bbox_inches="tight")
    _shrink_png(screenshot)
    return sweep


def _export_onnx() -> Path:
    """Export YOLO11n to ONNX into the model repository, as notebook 01 does."""
    from helpers.export import export_onnx
    from helpers.yolo import RandomWeightsWarning, load_yolo

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        return export_onnx(load_yolo("n"), MODEL_REPOSITORY).path


def _screenshot(page: Page, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path))
    _shrink_png(path)


def _shrink_png(path: Path, max_bytes: int = MAX_PNG_BYTES) -> None:
    """Reduce a PNG over ``max_bytes`` to a 256-colour palette (screenshots of text stay sharp)."""
    if path.stat().st_size <= max_bytes:
        return
    from PIL import Image

    with Image.open(path) as image:
        reduced = image.convert("RGB").quantize(colors=256)
    reduced.save(path, optimize=True)


PICTURES: tuple[str, ...] = ("jupyterlab", "netron", "plot")


def main(argv: list[str] | None = None) -> int:
    """Render the README's pictures; print what each shows, where it went and how big it is."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.screenshots",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, default=DOCS_SCREENSHOTS, help="folder for the PNGs")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=PICTURES,
        default=list(PICTURES),
        help="render only these (the plot measures for about a minute)",
    )
    args = parser.parse_args(argv)
    out: Path = args.out
    written: list[Path] = []
    if "jupyterlab" in args.only:
        written.append(out / "jupyterlab-environment-report.png")
        run = environment_report(written[-1])
        print(f"JupyterLab: {len(run.cells)} code cells ran in {run.seconds:.0f} s; {run.report}")
    if "netron" in args.only:
        model = MODEL_REPOSITORY / ONNX_MODEL / "1" / "model.onnx"
        if not model.is_file():
            model = _export_onnx()
        written.append(out / "netron-yolo11n.png")
        view = netron_graph(model, written[-1])
        types = view.node_types
        print(f"Netron: {sum(types.values())} nodes drawn, most common {types.most_common(4)}")
    if "plot" in args.only:
        written.append(out / "latency-throughput.png")
        sweep = latency_throughput(written[-1])
        print(sweep[["concurrency", "throughput_infer_per_s", "latency_p50_ms", "latency_p99_ms"]])
    for png in written:
        print(f"{png} {png.stat().st_size / 1000:.0f} kB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
