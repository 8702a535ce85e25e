"""CUDA graphs per batch size for a TorchScript or eager module (the PyTorch stand-in's fast path).

Launching YOLO11n's few hundred kernels one by one from Python costs more host time than the
GPU needs to run them (measured on an H200: 5.4 ms of host time per call for 1.1 ms of GPU
time at batch 1). A CUDA graph records the launches once and replays them in one call. A
graph has fixed shapes, so one is captured per batch size, at model load; a batch of ``n``
runs in the smallest captured size ``>= n`` (rows past ``n`` are left over from an earlier
call and are dropped from the outputs).

A module can split its work: if it has methods ``network`` (fixed shapes, no host sync:
captured) and ``finish`` (run after the replay, outside the graph, e.g. NMS whose output size
depends on the data), those are used; otherwise ``forward`` is captured whole. A module that
synchronises with the host (``.item()``, a tensor turned into a Python number, data-dependent
shapes) cannot be captured: ``GraphCaptureError`` says so and the caller runs it without graphs.

Imports torch only; runs inside Triton's Python stub (beside ``model.py``) and in-process
(``tools.bench.gpu`` measures the same model file with it).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class GraphCaptureError(RuntimeError):
    """The module could not be captured in a CUDA graph; the message says why."""


def graph_batch_sizes(text: str | None, max_batch: int) -> list[int]:
    """Batch sizes to capture: ``"1,2,4,8"`` as given (capped at ``max_batch``), default all."""
    if not text or text.strip().lower() in ("all", "true"):
        return list(range(1, max_batch + 1))
    sizes = sorted({int(part) for part in text.replace(" ", "").split(",") if part})
    if not sizes or sizes[0] < 1:
        raise ValueError(f"CUDA graph batch sizes must be positive integers, got {text!r}")
    kept = [size for size in sizes if size <= max_batch]
    return kept if kept and kept[-1] == max_batch else [*kept, max_batch]


class GraphedModule:
    """One CUDA graph per batch size around a module's fixed-shape part; ``finish`` runs after."""

    def __init__(
        self,
        module: torch.nn.Module,
        inputs: Sequence[tuple[Sequence[int], torch.dtype]],
        batch_sizes: Sequence[int],
        device: torch.device,
        warmup: int = 3,
    ) -> None:
        if device.type != "cuda" or not torch.cuda.is_available():
            raise GraphCaptureError("CUDA graphs need a CUDA device; this instance has none")
        network = getattr(module, "network", None)
        self.network = module if network is None else network
        self.finish = getattr(module, "finish", None)
        self.sizes = sorted(batch_sizes)
        self.static_inputs: dict[int, list[torch.Tensor]] = {}
        self.static_outputs: dict[int, list[torch.Tensor]] = {}
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        torch.backends.cudnn.benchmark = True  # kernels chosen during the warm-up runs
        pool = torch.cuda.graph_pool_handle()
        with (
            torch.cuda.device(device),
            torch.inference_mode(),
            torch.jit.optimized_execution(False),
        ):
            for size in reversed(self.sizes):  # largest first: the smaller ones reuse its pool
                static = [
                    torch.zeros((size, *shape), dtype=dtype, device=device)
                    for shape, dtype in inputs
                ]
                try:
                    self.graphs[size], self.static_outputs[size] = _capture(
                        self.network, static, pool, warmup
                    )
                except Exception as error:  # noqa: BLE001 - any capture failure means: no graphs
                    torch.cuda.synchronize(device)
                    raise GraphCaptureError(
                        f"capture at batch {size} failed: {str(error).splitlines()[0]} "
                        "(a host sync inside the model, e.g. .item() or a tensor used as a "
                        "Python number, or a data-dependent shape)"
                    ) from error
                self.static_inputs[size] = static

    def __call__(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        """Copy ``inputs`` into the graph of the smallest captured batch that fits, replay, finish."""
        rows = inputs[0].shape[0]
        size = next((s for s in self.sizes if s >= rows), None)
        if size is None:
            raise ValueError(
                f"batch of {rows} is larger than the largest captured ({self.sizes[-1]})"
            )
        for static, value in zip(self.static_inputs[size], inputs):
            static[:rows].copy_(value, non_blocking=True)
        self.graphs[size].replay()
        outputs = [output[:rows] for output in self.static_outputs[size]]
        if self.finish is not None:
            with torch.inference_mode():
                outputs = as_list(self.finish(*outputs))
        return outputs


def _capture(
    network: torch.nn.Module, static: list[torch.Tensor], pool: object, warmup: int
) -> tuple[torch.cuda.CUDAGraph, list[torch.Tensor]]:
    """Warm ``network`` up on a side stream, then capture one call of it on ``static``."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            network(*static)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool):
        outputs = as_list(network(*static))
    return graph, outputs


def as_list(result: object) -> list[torch.Tensor]:
    """A module's result (a tensor, a tuple or list of them) as a list of tensors."""
    if isinstance(result, torch.Tensor):
        return [result]
    return list(result)  # type: ignore[call-overload]
