"""YOLO11n TorchScript on an NVIDIA GPU through the embedded Triton, measured by perf_analyzer.

Three exports of the same network are served by the course's Python stand-in for the PyTorch
backend on ``KIND_GPU`` (not the native libtorch backend):

* ``naive``: what a first export looks like: float32 [3, 640, 640] in, float32 out;
* ``gpu``: uint8 RGB in (4x fewer bytes through the client, Triton and host-to-device
  copy), normalised and run in float16 on the GPU, float16 [84, 8400] out;
* ``boxes``: the ``gpu`` network, then decoding, top-k, confidence filter and NMS on the
  GPU: [300, 6] boxes and a count out per image (7.2 kB instead of 1.4 MB), captured in
  one CUDA graph per batch size at load (the stand-in's ``CUDA_GRAPHS`` parameter).

The Detect head is decoded on constant anchors (``DecodedYolo``), so the exports have no
host sync and can be captured. Before the server starts, the same model files run
in-process with input and output on the GPU: the ceiling that served throughput is
compared with. Each configuration's served answers are checked against the same files
in-process (``output_check``: perf_analyzer does not read outputs), over gRPC and, with the
``cuda`` transport, through CUDA shared memory too; ``--check-only`` does only that, in a
few minutes, with the last line ``gpu: answers_own=<answers nearest their own image>
answers=<sent>``. Each point is measured by perf_analyzer ``--repeats`` times; the report
gives min/median/max. The raw exports send their tensors in system shared memory; boxes out
is measured over each of ``--transports``: ``grpc`` (tensors in the gRPC messages),
``system`` (system shared memory) and ``cuda`` (CUDA shared memory: the images stay on the
GPU, and the stand-in, with the Python backend's ``FORCE_CPU_ONLY_INPUT_TENSORS: "no"``,
receives them as GPU tensors and stacks the batch there). After each transport the server's
own statistics for it (queue, compute input/infer/output per request, compute per batch size)
are printed. Writes a dated CSV and a markdown report naming the GPU and host to ``--out``
(default ``docs/results``); the last line is ``gpu: gain=... boxes_ips=<median images/s, boxes
out, system shared memory> ceiling_ratio=<served/ceiling>``, followed by
``..._grpc`` and ``..._cuda_shm`` figures for the other transports a run measured.
``--request-batch N`` makes perf_analyzer send boxes out's images N to a request (``-b N``;
the ``config`` column then says ``requests of N images``): perf_analyzer counts each image of
a request as an inference, so its infer/s is images/s whatever N is.
The CSV is saved after every configuration, so a run stopped early keeps what it measured;
``--report <csv>`` then writes its report and last line from the CSV alone.
``python -m tools.bench.gpu_tools`` compares perf_analyzer with the course's fallback
generator on the same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from collections.abc import Collection
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torchvision

from backends.pytorch.torch_runner import as_list
from helpers.machine import machine_facts
from helpers.model_config import config_from_dict, render_config
from helpers.paths import REPO_ROOT, build_dir
from helpers.results import load_results, save_results
from helpers.statistics import model_stats
from tools.bench import CannotRun, headline

INPUT, OUTPUT, SIDE = "INPUT__0", "OUTPUT__0", 640
MAX_BATCH = 32
OUTPUT_BYTES = 84 * 8400 * 4  # one float32 output per request
#: Boxes out: at most this many [x1, y1, x2, y2, score, class] rows per image (Ultralytics' default).
MAX_DETECTIONS = 300
#: Candidates per image kept (highest class score first) before the confidence filter and NMS.
PRE_NMS_TOPK = 512
#: Ultralytics ``predict`` defaults: confidence threshold, NMS IoU threshold.
CONF_THRESHOLD, IOU_THRESHOLD = 0.25, 0.7
#: Rounds of the fixed-point NMS captured in the graph; an image that needs more is redone.
NMS_ROUNDS = 24
#: The three exports ``bench gpu`` serves.
KINDS = ("naive", "gpu", "boxes")
#: perf_analyzer's stability options for every point (the report shows the same command).
STABILITY = ("--stability-percentage", "25", "--max-trials", "8")
#: How the client sends tensors: name -> (perf_analyzer's ``--shared-memory``, what the
#: ``config`` column adds to the configuration, the last line's key suffix). System shared
#: memory was the only transport of the earlier runs: it adds nothing.
TRANSPORTS = {
    "grpc": ("none", ", gRPC", "_grpc"),
    "system": ("system", "", ""),
    "cuda": ("cuda", ", CUDA shm", "_cuda_shm"),
}


class DecodedYolo(torch.nn.Module):
    """YOLO11 whose Detect-head decoding uses constant anchors: no host sync, so it graph-captures.

    Ultralytics' own head rebuilds its anchors from the stride tensor on every call, and in a
    TorchScript trace that turns a tensor into a Python number: a host sync that CUDA graph
    capture refuses. Here the anchors and strides for the fixed input side are buffers made
    once; the output is the same [N, 4 + classes, anchors] (xywh boxes, class scores).
    """

    def __init__(self, network: torch.nn.Module, side: int = SIDE, uint8_half: bool = False):
        super().__init__()
        from ultralytics.utils.tal import make_anchors

        head = network.model[-1]
        # The head returns its raw box and class maps; decoding happens below.
        head.forward = lambda features: head.forward_head(features, **head.one2many)
        self.net = network.half() if uint8_half else network
        self.uint8_half = uint8_half
        self.dfl = head.dfl
        sizes = torch.tensor([[side // int(s), side // int(s)] for s in head.stride])
        anchors, strides = make_anchors(sizes, head.stride, 0.5)
        self.register_buffer("anchors", anchors.transpose(0, 1).unsqueeze(0))  # [1, 2, A]
        self.register_buffer("strides", strides.transpose(0, 1).unsqueeze(0))  # [1, 1, A]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images ([N, 3, side, side]; uint8 for the half variant) -> [N, 4 + classes, anchors]."""
        if self.uint8_half:
            images = images.half() / 255.0
        raw = self.net(images)
        left_top, right_bottom = self.dfl(raw["boxes"]).chunk(2, 1)
        anchors = self.anchors.to(left_top.dtype)
        x1y1, x2y2 = anchors - left_top, anchors + right_bottom
        boxes = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1) * self.strides.to(x1y1.dtype)
        return torch.cat((boxes, raw["scores"].sigmoid()), 1)


class Candidates(torch.nn.Module):
    """The fixed-shape part of boxes-out: decode, best class per anchor, top-k per image."""

    def __init__(self, decoded: DecodedYolo, topk: int = PRE_NMS_TOPK):
        super().__init__()
        self.decoded = decoded
        self.topk = topk

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images -> boxes [N, k, 4] (xyxy), scores [N, k], classes [N, k] (float32)."""
        prediction = self.decoded(images).float()
        centre, size = prediction[:, :2], prediction[:, 2:4]
        xyxy = torch.cat((centre - size / 2, centre + size / 2), 1)  # [N, 4, A]
        scores, classes = prediction[:, 4:].max(1)  # [N, A]
        top, index = scores.topk(self.topk, dim=1)
        boxes = xyxy.gather(2, index.unsqueeze(1).expand(-1, 4, -1)).transpose(1, 2)
        return boxes, top, classes.gather(1, index).float()


class Boxes(torch.nn.Module):
    """Boxes out: ``network`` (fixed shapes, NMS included: graph-capturable) then ``finish``.

    Output per image: ``[MAX_DETECTIONS, 6]`` rows ``x1, y1, x2, y2, score, class`` in input
    pixels, the first ``count`` of them filled (zeros after), and ``count`` ``[1]`` int32:
    the layout of Ultralytics' end-to-end exports and TensorRT's EfficientNMS, and 7.2 kB per
    image instead of the 1.4 MB raw map.

    NMS runs in fixed shapes so that it is captured in the CUDA graph with the network
    (``select``): greedy class-aware NMS written as a fixed point (Cluster-NMS, Zheng et al.
    2021): a candidate is kept when no kept candidate of higher score and the same class
    overlaps it above the IoU threshold; ``rounds`` matrix products iterate that rule from
    "every candidate kept". Its only fixed point is greedy NMS's answer, so an image whose
    last two rounds agree is exact; an image that has not settled (a suppression chain longer
    than ``rounds``) is redone by torchvision's NMS in ``finish``, after the replay.
    torchvision's CUDA NMS itself cannot be captured (it reads its mask on the host) and cost
    0.9-1.2 us per candidate on an H200 (19.9 ms per batch of 32 with 512 candidates each).
    """

    def __init__(
        self,
        candidates: torch.nn.Module,
        conf: float = CONF_THRESHOLD,
        iou: float = IOU_THRESHOLD,
        max_det: int = MAX_DETECTIONS,
        rounds: int = NMS_ROUNDS,
    ):
        super().__init__()
        self.candidates = candidates
        self.conf, self.iou, self.max_det, self.rounds = conf, iou, max_det, rounds

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images -> (detections [N, max_det, 6], count [N, 1])."""
        detections, count, unsettled, boxes, scores, classes = self.network(images)
        return self.finish(detections, count, unsettled, boxes, scores, classes)

    @torch.jit.export
    def network(
        self, images: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The fixed-shape part: candidates per image and their NMS (``select``)."""
        boxes, scores, classes = self.candidates(images)
        detections, count, unsettled = self.select(boxes, scores, classes)
        return detections, count, unsettled, boxes, scores, classes

    @torch.jit.export
    def select(
        self, boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Confidence filter and class-aware NMS in fixed shapes, no host sync, padded out.

        boxes [N, k, 4] xyxy, scores [N, k], classes [N, k] -> detections [N, max_det, 6],
        count [N, 1] int32, unsettled [N] bool (NMS did not settle in ``rounds``: redo).
        """
        batch, k = scores.shape
        boxes, scores, classes = self.by_score(boxes, scores, classes)
        valid = scores > self.conf
        area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
        low = torch.maximum(boxes[:, :, None, :2], boxes[:, None, :, :2])
        high = torch.minimum(boxes[:, :, None, 2:], boxes[:, None, :, 2:])
        inter = (high - low).clamp(min=0).prod(3)
        overlap = inter / (area[:, :, None] + area[:, None, :] - inter)
        # suppresses[n, i, j]: candidate i, if kept, removes the lower-scored candidate j
        suppresses = (
            (
                (overlap > self.iou)
                & (classes[:, :, None] == classes[:, None, :])
                & valid[:, :, None]
                & valid[:, None, :]
            )
            .to(boxes.dtype)
            .triu(1)
        )
        keep = valid.to(boxes.dtype)
        previous = keep
        for _ in range(self.rounds):
            previous = keep
            removed = torch.bmm(keep.unsqueeze(1), suppresses).squeeze(1) > 0
            keep = (valid & ~removed).to(boxes.dtype)
        unsettled = (keep != previous).any(1)
        kept = keep > 0
        rank = kept.long().cumsum(1) - 1
        slot = torch.where(kept & (rank < self.max_det), rank, torch.full_like(rank, self.max_det))
        rows = torch.cat((boxes, scores.unsqueeze(2), classes.unsqueeze(2)), 2)
        detections = torch.zeros(batch, self.max_det + 1, 6, device=boxes.device)
        detections.scatter_(1, slot.unsqueeze(2).expand(-1, -1, 6), rows)
        count = kept.sum(1, keepdim=True).clamp(max=self.max_det).to(torch.int32)
        return detections[:, : self.max_det], count, unsettled

    def by_score(
        self, boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each image's candidates, highest score first; equal scores keep their order."""
        scores, order = scores.sort(dim=1, descending=True, stable=True)
        boxes = boxes.gather(1, order.unsqueeze(2).expand(-1, -1, 4))
        return boxes, scores, classes.gather(1, order)

    @torch.jit.export
    def finish(
        self,
        detections: torch.Tensor,
        count: torch.Tensor,
        unsettled: torch.Tensor,
        boxes: torch.Tensor,
        scores: torch.Tensor,
        classes: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``select``'s answer, with any image it left unsettled redone by torchvision's NMS."""
        if bool(unsettled.any()):
            redo = unsettled.nonzero().flatten()
            exact, exact_count = self.torchvision_nms(boxes[redo], scores[redo], classes[redo])
            detections, count = detections.clone(), count.clone()
            detections[redo] = exact
            count[redo] = exact_count
        return detections, count

    @torch.jit.export
    def torchvision_nms(
        self, boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The same filter and NMS with torchvision's kernel (data-dependent shapes, host sync).

        Equal scores are ordered as in ``select`` (first candidate first): torchvision gets
        each candidate's rank as its score, so both give the same boxes in the same order.
        """
        batch, k = scores.shape
        device = scores.device
        boxes, scores, classes = self.by_score(boxes, scores, classes)
        rank = torch.arange(k, 0, -1, device=device, dtype=boxes.dtype).expand(batch, k)
        keep = scores > self.conf
        image = torch.arange(batch, device=device).unsqueeze(1).expand(batch, k)[keep]
        boxes, scores, classes, rank = boxes[keep], scores[keep], classes[keep], rank[keep]
        # torchvision's batched NMS by offsets: boxes of another image or class never overlap
        group = image * 1000 + classes.long()
        largest = torch.cat((boxes.flatten(), torch.zeros(1, device=device))).max()
        offsets = group.to(boxes.dtype) * (largest + 1)
        kept = torchvision.ops.nms(boxes + offsets.unsqueeze(1), rank, self.iou)
        image = image[kept]
        order = torch.sort(image, stable=True)[1]  # by image; within one, still by score
        kept, image = kept[order], image[order]
        counts = torch.zeros(batch, dtype=torch.long, device=device)
        counts.scatter_add_(0, image, torch.ones_like(image))
        slot = torch.arange(kept.numel(), device=device) - (counts.cumsum(0) - counts)[image]
        chosen = slot < self.max_det
        rows = torch.cat((boxes[kept], scores[kept].unsqueeze(1), classes[kept].unsqueeze(1)), 1)
        detections = torch.zeros(batch, self.max_det, 6, device=device)
        detections[image[chosen], slot[chosen]] = rows[chosen]
        return detections, counts.clamp(max=self.max_det).to(torch.int32).unsqueeze(1)


def build_module(kind: str, device: str = "cuda") -> torch.jit.ScriptModule:
    """YOLO11n (random weights unless yolo11n.pt is found) as the TorchScript of ``kind``."""
    from helpers.yolo import load_yolo

    network = load_yolo("n").model.model.fuse().eval().to(device)
    decoded = DecodedYolo(network, uint8_half=kind != "naive").eval().to(device)
    example = torch.zeros(
        1, 3, SIDE, SIDE, device=device, dtype=torch.float32 if kind == "naive" else torch.uint8
    )
    with torch.inference_mode():
        if kind != "boxes":
            return torch.jit.trace(decoded, example, check_trace=False)
        candidates = torch.jit.trace(Candidates(decoded).eval(), example, check_trace=False)
    return torch.jit.script(Boxes(candidates).eval())


def model_config(name: str, kind: str) -> dict:
    """The config.pbtxt of an export of ``kind``: batched, one GPU instance."""
    outputs = {
        "naive": [{"name": OUTPUT, "data_type": "TYPE_FP32", "dims": [84, 8400]}],
        "gpu": [{"name": OUTPUT, "data_type": "TYPE_FP16", "dims": [84, 8400]}],
        "boxes": [
            {"name": OUTPUT, "data_type": "TYPE_FP32", "dims": [MAX_DETECTIONS, 6]},
            {"name": "OUTPUT__1", "data_type": "TYPE_INT32", "dims": [1]},
        ],
    }[kind]
    config: dict = {
        "name": name,
        "platform": "pytorch_libtorch",
        "max_batch_size": MAX_BATCH,
        "input": [
            {
                "name": INPUT,
                "data_type": "TYPE_FP32" if kind == "naive" else "TYPE_UINT8",
                "dims": [3, SIDE, SIDE],
            }
        ],
        "output": outputs,
        "instance_group": [{"kind": "KIND_GPU", "count": 1}],
        # The Python backend hands inputs sent in GPU memory (CUDA shared memory) to the
        # stand-in as they are, instead of copying them to the host; host inputs are unchanged.
        "parameters": {"FORCE_CPU_ONLY_INPUT_TENSORS": {"string_value": "no"}},
    }
    if kind != "naive":
        # TorchScript's profiling executor re-specialises for every new batch size that
        # dynamic batching produces; the native libtorch backend has the same switch.
        config["parameters"]["DISABLE_OPTIMIZED_EXECUTION"] = {"string_value": "true"}
    if kind == "boxes":  # the stand-in's opt-in: one CUDA graph per batch size, captured at load
        config["parameters"]["CUDA_GRAPHS"] = {"string_value": "true"}
    return config


def export_variant(folder: Path, kind: str) -> None:
    """Write ``folder/1/model.pt`` (traced on CUDA) and ``folder/config.pbtxt`` for ``kind``."""
    (folder / "1").mkdir(parents=True, exist_ok=True)
    build_module(kind).save(str(folder / "1" / "model.pt"))
    (folder / "config.pbtxt").write_text(render_config(model_config(folder.name, kind)))


def output_bytes(kind: str) -> int:
    """Bytes of the largest output of one request (perf_analyzer's output shared memory)."""
    return {"naive": OUTPUT_BYTES, "gpu": OUTPUT_BYTES // 2, "boxes": MAX_DETECTIONS * 6 * 4}[kind]


def inprocess_ceiling(
    module: torch.nn.Module, kind: str, batch: int, graphs: bool, seconds: float = 2
) -> float:
    """Images/s of a model file loaded on the GPU, in this process, input and output there too."""
    import time

    from backends.pytorch.torch_runner import GraphedModule

    device = torch.device("cuda")
    dtype = torch.float32 if kind == "naive" else torch.uint8
    images = torch.randint(0, 256, (batch, 3, SIDE, SIDE), device=device).to(dtype)
    runner = GraphedModule(module, [((3, SIDE, SIDE), dtype)], [batch], device) if graphs else None
    with torch.inference_mode(), torch.jit.optimized_execution(kind == "naive"):

        def once() -> None:
            runner(images) if runner is not None else module(images)

        for _ in range(5):
            once()
        torch.cuda.synchronize()
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            once()
            done += batch
        torch.cuda.synchronize()
    return done / (time.perf_counter() - start)


def nms_worst_case(
    module: torch.nn.Module, batch: int = MAX_BATCH, repeats: int = 20
) -> tuple[float, int]:
    """The boxes model's NMS (``select`` then ``finish``) when every candidate passes the threshold.

    ``module`` is the boxes model file loaded on the GPU.

    Returns the milliseconds per batch and how many of the ``batch`` images ``select`` left
    unsettled (redone by torchvision's NMS): random boxes of 4-104 pixels in a 600-pixel
    square, 80 classes, all scores above the threshold.
    """
    import time

    generator = torch.Generator(device="cuda").manual_seed(0)
    corner = torch.rand(batch, PRE_NMS_TOPK, 2, device="cuda", generator=generator) * 600
    size = torch.rand(batch, PRE_NMS_TOPK, 2, device="cuda", generator=generator) * 100 + 4
    boxes = torch.cat((corner, corner + size), 2)
    scores = torch.rand(batch, PRE_NMS_TOPK, device="cuda", generator=generator) * 0.7 + 0.3
    classes = torch.randint(0, 80, (batch, PRE_NMS_TOPK), device="cuda").float()

    def once() -> torch.Tensor:
        detections, count, unsettled = module.select(boxes, scores, classes)
        module.finish(detections, count, unsettled, boxes, scores, classes)
        return unsettled

    with torch.inference_mode():
        unsettled = once()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            once()
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats * 1000, int(unsettled.sum())


def output_check(
    url: str,
    model: str,
    module: torch.nn.Module,
    images: list,
    unordered: Collection[str] = (),
    transport: str = "grpc",
) -> tuple[int, str]:
    """Served outputs against ``module`` run in this process on the same images, one at a time.

    ``images`` (numpy arrays with the batch dimension) are sent at once over gRPC, or with
    ``transport="cuda"`` through CUDA shared memory (``served_through_cuda_shm``), so dynamic
    batching stacks them; ``module`` is the model file loaded on the device the server uses.
    Says how many answers are nearest to their own image's in-process output (a row handed to
    the wrong request, or an empty or stale one, is not) and the largest absolute difference
    per output. perf_analyzer does not read the outputs: this says the served path is right.
    Outputs named in ``unordered`` (boxes) are compared as sets of rows (``row_set_gap``): a
    batch of 32 in float16 is not bit-equal to one image alone, and boxes of nearly equal
    scores may come out in another order. Returns that count and a sentence saying both.
    """
    from concurrent.futures import ThreadPoolExecutor

    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    from helpers.clients import infer, model_io

    with grpcclient.InferenceServerClient(url) as client:
        names = model_io(client, model)[1]

    def served(image: np.ndarray) -> list[np.ndarray]:
        """The answer's outputs; an error, or an output that does not parse, as empty arrays."""
        try:
            answer = infer(url, model, {INPUT: image})
            return [answer[name].astype(np.float64) for name in names]
        except (InferenceServerException, ValueError, KeyError) as error:
            print(f"{model}: a check request failed: {error!r}", flush=True)
            return [np.empty(0) for _ in names]

    if transport == "cuda":
        answers = served_through_cuda_shm(url, model, images)
    else:
        with ThreadPoolExecutor(len(images)) as pool:
            answers = list(pool.map(served, images))
    device = next(module.parameters()).device
    with torch.inference_mode():
        local = [as_list(module(torch.from_numpy(image).to(device))) for image in images]
    local = [[value.double().cpu().numpy() for value in values] for values in local]

    def gap(k: int, got: np.ndarray, want: np.ndarray) -> float:
        if got.shape != want.shape:
            return float("inf")
        if names[k] in unordered:
            return max(row_set_gap(a, b) for a, b in zip(got, want))
        return float(np.abs(got - want).max())

    def nearest(answer: list[np.ndarray]) -> int | None:
        """The image whose in-process output the answer is nearest to; None if it fits none."""
        gaps = [gap(0, answer[0], values[0]) for values in local]
        return None if min(gaps) == float("inf") else gaps.index(min(gaps))

    own = sum(nearest(answer) == index for index, answer in enumerate(answers))
    worst = {
        name: max(gap(k, answer[k], values[k]) for answer, values in zip(answers, local))
        for k, name in enumerate(names)
    }
    scale = {  # the in-process outputs' size, to read the differences against
        name: max(float(np.abs(values[k]).max(initial=0)) for values in local)
        for k, name in enumerate(names)
    }
    return own, f"{own} of {len(images)} answers nearest their own image; " + (
        "max |served - in-process| "
        + ", ".join(
            f"{name} {value:.3g} (in-process values up to {scale[name]:.3g})"
            for name, value in worst.items()
        )
    )


def served_through_cuda_shm(url: str, model: str, images: list) -> list[list[np.ndarray]]:
    """Each image sent at once (threads) with its input and outputs in CUDA shared memory.

    One region per image for its input and one per output: the client copies the images to
    the GPU and registers the regions with the server first, then sends every request at once
    and reads the answers from the GPU. Returns each answer's outputs in the model's output
    order (a request that failed: empty arrays, as ``output_check`` expects).
    """
    from concurrent.futures import ThreadPoolExecutor

    import tritonclient.grpc as grpcclient
    import tritonclient.utils.cuda_shared_memory as cudashm
    from tritonclient.utils import (
        InferenceServerException,
        np_to_triton_dtype,
        triton_to_np_dtype,
    )

    device = torch.cuda.current_device()
    with grpcclient.InferenceServerClient(url) as client:
        outputs = client.get_model_metadata(model, as_json=True)["outputs"]
        regions: dict[str, object] = {}

        def region(name: str, nbytes: int) -> str:
            regions[name] = cudashm.create_shared_memory_region(name, nbytes, device)
            raw = cudashm.get_raw_handle(regions[name])
            client.register_cuda_shared_memory(name, raw, device, nbytes)
            return name

        requests = []
        try:
            for index, image in enumerate(images):
                tensor = grpcclient.InferInput(
                    INPUT, list(image.shape), np_to_triton_dtype(image.dtype)
                )
                tensor.set_shared_memory(region(f"check_in_{index}", image.nbytes), image.nbytes)
                cudashm.set_shared_memory_region(
                    regions[f"check_in_{index}"], [np.ascontiguousarray(image)]
                )
                wanted = []
                for k, out in enumerate(outputs):
                    shape = [image.shape[0], *(int(d) for d in out["shape"][1:])]
                    itemsize = np.dtype(triton_to_np_dtype(out["datatype"])).itemsize
                    nbytes = int(np.prod(shape)) * itemsize
                    wanted.append((grpcclient.InferRequestedOutput(out["name"]), shape))
                    wanted[-1][0].set_shared_memory(
                        region(f"check_out_{index}_{k}", nbytes), nbytes
                    )
                requests.append((index, tensor, wanted))

            def served(request: tuple) -> list[np.ndarray]:
                index, tensor, wanted = request
                try:
                    with grpcclient.InferenceServerClient(url) as sender:
                        sender.infer(model, [tensor], outputs=[w for w, _ in wanted])
                except InferenceServerException as error:
                    print(f"{model}: a CUDA shm check request failed: {error!r}", flush=True)
                    return [np.empty(0) for _ in outputs]
                return [
                    cudashm.get_contents_as_numpy(
                        regions[f"check_out_{index}_{k}"],
                        triton_to_np_dtype(out["datatype"]),
                        shape,
                    ).astype(np.float64)
                    for k, (out, (_, shape)) in enumerate(zip(outputs, wanted))
                ]

            with ThreadPoolExecutor(len(requests)) as pool:
                return list(pool.map(served, requests))
        finally:
            for name, handle in regions.items():
                client.unregister_cuda_shared_memory(name)
                cudashm.destroy_shared_memory_region(handle)


def row_set_gap(got: np.ndarray, want: np.ndarray) -> float:
    """How far two 2-D arrays are as sets of rows: the largest distance from a row of either to
    the nearest row of the other (max |difference| over the row); 0 when only the order differs.
    """
    distance = np.abs(got[:, None, :] - want[None, :, :]).max(axis=-1)
    return float(max(distance.min(axis=1).max(), distance.min(axis=0).max()))


def check_images(kind: str, count: int = 8) -> list:
    """``count`` random images of one request each, in the input type of the export ``kind``."""
    images = [
        np.random.default_rng(seed).integers(0, 256, (1, 3, SIDE, SIDE), dtype=np.uint8)
        for seed in range(count)
    ]
    return [image.astype(np.float32) / 255 for image in images] if kind == "naive" else images


def console_block(config: str, level: int, results: Path, model: str) -> str:
    """One point's perf_analyzer console output under a ``### config, concurrency N`` header."""
    from helpers import perf_analyzer

    text = perf_analyzer.console_path(perf_analyzer.level_csv(results, model, level)).read_text()
    return f"### {config}, concurrency {level}\n{text.rstrip()}\n\n"


def variant(model: Path, batching: bool, instances: int = 1, threads: int | None = None) -> dict:
    """The model's config with batching on/off, instances, threads and a warm-up per batch size.

    ``threads`` is the stand-in's ``NUM_THREADS``: the torch threads of each instance, which
    also stack a batch's requests into one pinned buffer (39 MB for 32 images). Without it
    an instance inherits the server's ``OMP_NUM_THREADS``, and importing Ultralytics (as
    this bench does, to export) sets that to 1 when it is unset: one thread per instance.

    ``model_warmup`` makes Triton run one request of every batch size the instance can get
    before the model is READY: the first call at a new batch size loads and picks CUDA
    kernels for it, which otherwise lands inside the measurement as a stall of up to seconds.
    """
    from helpers.model_config import config_to_dict, read_config

    values = config_to_dict(read_config(model))
    values["instance_group"] = [{"kind": "KIND_GPU", "count": instances}]
    if threads:
        values.setdefault("parameters", {})["NUM_THREADS"] = {"string_value": str(threads)}
    sizes = range(1, values["max_batch_size"] + 1) if batching else [1]
    values.pop("dynamic_batching", None)
    if batching:
        values["dynamic_batching"] = {"max_queue_delay_microseconds": 1000}
    values["model_warmup"] = [
        {
            "name": f"batch {size}",
            "batch_size": size,
            "inputs": {
                spec["name"]: {
                    "data_type": spec["data_type"],
                    "dims": spec["dims"],
                    "zero_data": True,
                }
                for spec in values["input"]
            },
        }
        for size in sizes
    ]
    config_from_dict(values)
    return values


def batch_stats(url: str, model: str) -> dict[int, tuple[int, int]]:
    """Triton's statistics per batch size since load: executions and compute-infer ns."""
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(url) as client:
        stats = model_stats(client, model)
    return {
        size: (count, stats.batch_infer_ns.get(size, 0)) for size, count in stats.batches.items()
    }


def batch_profile(url: str, model: str, since: dict[int, tuple[int, int]] | None = None) -> str:
    """Executions and mean compute time per batch size since load, or since ``since``."""
    parts = []
    for size, (count, ns) in sorted(batch_stats(url, model).items()):
        before = (since or {}).get(size, (0, 0))
        count, ns = count - before[0], ns - before[1]
        if count:
            parts.append(f"{size}x{count}:{ns / count / 1e6:.1f}ms")
    when = "since load, warm-up included" if since is None else "during these runs"
    return f"executions per batch size {when} (size x count: mean compute): " + " ".join(parts)


def markdown_table(frame: pd.DataFrame) -> str:
    """A DataFrame as a GitHub markdown table (no extra dependency)."""
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


#: One served configuration: export, dynamic batching, GPU instances, concurrency levels.
Point = tuple[str, bool, int, list[int]]


def plan(concurrency: list[int], top: int, boxes_instances: list[int]) -> list[Point]:
    """What ``bench gpu`` serves, in order: boxes out per instance count, then the raw exports.

    The Python stub of each instance spends host time per batch (reading the requests,
    gathering them, building the responses), so boxes out is also measured with more
    instances than the raw exports.
    """
    boxes = [("boxes", True, count, concurrency) for count in boxes_instances]
    return [  # the headline first, in case a lease runs out
        *boxes,
        ("gpu", False, 1, [top]),
        ("gpu", True, 1, [top]),
        ("gpu", True, 2, [top]),
        ("naive", False, 1, [top]),
        ("naive", True, 1, [top]),
    ]


def label(
    name: str, batching: bool, instances: int, transport: str = "system", request_batch: int = 1
) -> str:
    """The ``config`` column of a served configuration, its images per request if more than
    one, and how its tensors travel (the transport's suffix last)."""
    images = f", requests of {request_batch} images" if request_batch > 1 else ""
    suffix = TRANSPORTS[transport][1]
    return (
        f"{name}, batching {'on' if batching else 'off'}, {instances} instance(s){images}{suffix}"
    )


def summary(results: pd.DataFrame) -> pd.DataFrame:
    """Per configuration and concurrency: runs, min/median/max infer/s, median p50 and p99."""
    rows = []
    for (config, level), runs in results.groupby(["config", "concurrency"], sort=False):
        tput = runs.throughput_infer_per_s
        rows.append(
            {
                "config": config,
                "concurrency": int(level),
                "runs": len(runs),
                "min": tput.min(),
                "median": tput.median(),
                "max": tput.max(),
                "p50_ms": runs.latency_p50_ms.median(),
                "p99_ms": runs.latency_p99_ms.median(),
            }
        )
    return pd.DataFrame(rows)


def best_boxes(table: pd.DataFrame, transport: str) -> pd.Series | None:
    """The boxes-out row of ``summary`` with the highest median over ``transport``, if any."""
    suffixes = [suffix for _, suffix, _ in TRANSPORTS.values() if suffix]
    suffix = TRANSPORTS[transport][1]
    if suffix:
        over = table.config.str.endswith(suffix)
    else:  # system shared memory: the configurations without a transport suffix
        over = ~table.config.str.endswith(tuple(suffixes))
    boxes = table[table.config.str.startswith("boxes") & over & (table.concurrency <= 64)]
    return boxes.loc[boxes["median"].idxmax()] if len(boxes) else None


def headline_figures(table: pd.DataFrame, top: int, ceiling: float) -> dict[str, float]:
    """The last line's figures from the medians of ``summary``: gains, boxes out vs the ceiling.

    ``boxes_*`` and ``ceiling_ratio`` are boxes out in system shared memory (as in every
    earlier run); a run that also measured other transports adds ``boxes_ips_<transport>``
    and ``ceiling_ratio_<transport>`` (``_grpc``, ``_cuda_shm``), CUDA shared memory last.
    """

    def median(config: str, level: int) -> float:
        rows = table[(table.config == config) & (table.concurrency == level)]
        return float(rows["median"].iloc[0]) if len(rows) else float("nan")

    best = best_boxes(table, "system")
    boxes_ips = float(best["median"]) if best is not None else float("nan")
    others = {}
    for transport, (_, _, key) in TRANSPORTS.items():
        row = best_boxes(table, transport) if key else None
        if row is not None:
            others[f"boxes_ips{key}"] = float(row["median"])
            others[f"ceiling_ratio{key}"] = float(row["median"]) / ceiling
    return {
        "gain": median(label("gpu", True, 1), top) / median(label("gpu", False, 1), top),
        "instances_gain": median(label("gpu", True, 2), top) / median(label("gpu", True, 1), top),
        "naive_gain": median(label("naive", True, 1), top) / median(label("naive", False, 1), top),
        "gpu_ips": median(label("gpu", True, 1), top),
        "naive_ips": median(label("naive", True, 1), top),
        "boxes_c": float(best["concurrency"]) if best is not None else float("nan"),
        "boxes_p99_ms": float(best["p99_ms"]) if best is not None else float("nan"),
        "ceiling_ips": ceiling,
        "boxes_ips": boxes_ips,
        "ceiling_ratio": boxes_ips / ceiling,
        **others,
    }


def run(argv: list[str]) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m tools.bench gpu")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[32, 64])
    parser.add_argument(
        "--boxes-instances", type=int, nargs="+", default=[1, 2, 4], help="boxes-out instances"
    )
    parser.add_argument("--top", type=int, default=32, help="concurrency of the raw-output points")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch threads per instance (NUM_THREADS; default: CPU cores / instances)",
    )
    parser.add_argument(
        "--check-only",
        action="store_true",
        help="only check each configuration's served answers against in-process (no perf_analyzer)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="perf_analyzer runs per point")
    parser.add_argument("--window-ms", type=int, default=2000, help="perf_analyzer window")
    parser.add_argument("--only", nargs="+", choices=KINDS, help="serve only these exports")
    parser.add_argument(
        "--transports",
        nargs="+",
        choices=list(TRANSPORTS),
        default=list(TRANSPORTS),
        help="how the client sends boxes out's tensors (the raw exports: system shared memory)",
    )
    parser.add_argument(
        "--boxes-outputs",
        choices=["host", "gpu"],
        default="host",
        help="where the stand-in leaves boxes out's outputs of a batch whose inputs came in GPU "
        "memory: copied to host memory, or on the GPU (its OUTPUTS_ON_GPU parameter)",
    )
    parser.add_argument(
        "--cuda-pool-mb",
        type=int,
        help="Triton's CUDA memory pool on GPU 0 in MiB (--cuda-memory-pool-byte-size; "
        "default: Triton's 64 MiB)",
    )
    parser.add_argument(
        "--request-batch",
        type=int,
        default=1,
        help=f"images per request perf_analyzer sends boxes out (-b; 1 to {MAX_BATCH}, the "
        "model's max_batch_size; the raw exports and the answer check: 1). perf_analyzer's "
        "infer/s counts images, so it stays images/s",
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "results")
    parser.add_argument("--host", help="label for this machine in the results (default: its name)")
    parser.add_argument(
        "--report",
        type=Path,
        help="only write the .md of a saved CSV (a run stopped before its end has none)",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.request_batch <= MAX_BATCH:
        parser.error(
            f"--request-batch must be 1 to {MAX_BATCH} (the model's max_batch_size), "
            f"got {args.request_batch}"
        )
    if args.report:
        tool = "perf_analyzer (report written afterwards from the CSV, `--report`)"
        figures = report(args.report, args.top, args.window_ms, tool)
        print(f"wrote {args.report.with_suffix('.md')}")
        return figures

    from helpers import perf_analyzer
    from helpers.server import TritonServer

    if shutil.which("nvidia-smi") is None or not torch.cuda.is_available():
        raise CannotRun("no NVIDIA GPU visible (nvidia-smi and torch.cuda) on this machine")
    location = perf_analyzer.find_perf_analyzer(use_docker=False)
    if not location.available:
        raise CannotRun(f"perf_analyzer cannot run here: {location.reason}")
    facts = machine_facts()
    print(json.dumps(facts), flush=True)

    repository = build_dir("gpu_repository")
    shutil.rmtree(repository)
    kinds = args.only or list(KINDS)
    models = {kind: repository / f"yolo11n_ts_{kind}" for kind in kinds}
    for kind, folder in models.items():
        export_variant(folder, kind)
    references = {  # each model file in this process: the ceiling, the served answers' check
        kind: torch.jit.load(str(folder / "1" / "model.pt"), map_location="cuda").eval()
        for kind, folder in models.items()
    }
    ceilings = {}
    for kind in models:  # before the server: the GPU to itself
        graphs = kind == "boxes"
        ceilings[kind] = inprocess_ceiling(references[kind], kind, MAX_BATCH, graphs)
        print(
            f"in-process ceiling {kind}, batch {MAX_BATCH}: {ceilings[kind]:.0f} images/s "
            f"(same model file, input and output on the GPU{', CUDA graphs' if graphs else ''})",
            flush=True,
        )
    if "boxes" in models:
        worst, unsettled = nms_worst_case(references["boxes"])
        print(
            f"boxes NMS at batch {MAX_BATCH} with all {PRE_NMS_TOPK} candidates per image above "
            f"the threshold, outside a graph: {worst:.2f} ms ({unsettled} of {MAX_BATCH} images "
            f"needed more than {NMS_ROUNDS} rounds)",
            flush=True,
        )
    columns = ["concurrency", "throughput_infer_per_s", "latency_p50_ms", "latency_p99_ms"]
    columns += ["server_queue_ms", "server_compute_input_ms", "server_compute_infer_ms"]
    columns += ["server_compute_output_ms"]
    frames: list[pd.DataFrame] = []
    consoles: list[str] = []
    checks: dict[str, str] = {}
    answers = {"answers_own": 0, "answers": 0}  # over every configuration's check
    results = build_dir("gpu_perf_analyzer")
    pool = (
        [f"--cuda-memory-pool-byte-size=0:{args.cuda_pool_mb << 20}"] if args.cuda_pool_mb else []
    )
    with TritonServer(repository, startup_timeout=180, extra_args=pool) as server:
        for name, batching, instances, levels in plan(
            args.concurrency, args.top, args.boxes_instances
        ):
            if name not in models:
                continue
            config = label(name, batching, instances)
            threads = args.threads or max(1, (os.cpu_count() or 1) // instances)
            values = variant(models[name], batching, instances, threads)
            if name == "boxes" and args.boxes_outputs == "gpu":
                values["parameters"]["OUTPUTS_ON_GPU"] = {"string_value": "true"}
            server.load_model(models[name].name, config=values)
            transports = args.transports if name == "boxes" else ["system"]
            images = check_images(name)
            for transport in ["grpc", "cuda"] if "cuda" in transports else ["grpc"]:
                checked = label(
                    name, batching, instances, "system" if transport == "grpc" else transport
                )
                own, checks[checked] = output_check(
                    server.grpc_url,
                    models[name].name,
                    references[name],
                    images,
                    unordered=[OUTPUT] if name == "boxes" else [],
                    transport=transport,
                )
                answers["answers_own"] += own
                answers["answers"] += len(images)
                print(f"{checked}: {checks[checked]}", flush=True)
            if args.check_only:
                continue
            request_batch = args.request_batch if name == "boxes" else 1
            for transport in transports:
                config = label(name, batching, instances, transport, request_batch)
                shared_memory = TRANSPORTS[transport][0]
                before = batch_stats(server.grpc_url, models[name].name)
                rows = []
                for level in levels:  # one at a time: an unstable level is reported, not fatal
                    for repeat in range(args.repeats):
                        try:
                            measured = perf_analyzer.run(
                                models[name].name,
                                [level],
                                url=server.grpc_url,
                                protocol="grpc",
                                shape={INPUT: [3, SIDE, SIDE]},
                                measurement_interval_ms=args.window_ms,
                                shared_memory=shared_memory,
                                output_shared_memory_size=output_bytes(name) * request_batch,
                                batch_size=request_batch,
                                extra=STABILITY,
                                location=location,
                                results_dir=results,
                                progress=False,
                            )
                            rows.append(measured.assign(repeat=repeat))
                            if repeat == 0:  # one console output per point, kept with the results
                                consoles.append(
                                    console_block(config, level, results, models[name].name)
                                )
                        except perf_analyzer.PerfAnalyzerError as error:
                            print(f"{config}, concurrency {level}: {str(error).splitlines()[-1]}")
                if not rows:
                    continue
                frame = pd.concat(rows, ignore_index=True).assign(
                    config=config,
                    model=name,
                    batching=batching,
                    instances=instances,
                    threads=threads,
                    shared_memory=shared_memory,
                    ceiling_ips=ceilings[name],
                    outputs=args.boxes_outputs if name == "boxes" else "host",
                    cuda_pool_mb=args.cuda_pool_mb or 64,
                    request_batch=request_batch,
                )
                frames.append(frame)
                path = save_results(  # after every configuration: a cut-short run keeps its rows
                    pd.concat(frames, ignore_index=True).assign(**facts),
                    "gpu",
                    args.out,
                    launcher="embedded",
                    host=args.host,
                )
                path.with_suffix(".console.txt").write_text("".join(consoles))
                print(f"{config}, perf_analyzer", frame[columns].round(2).to_string(index=False))
                print(batch_profile(server.grpc_url, models[name].name, before), flush=True)
        print(server.log_tail(12, containing=["stand-in", "CUDA graph"]))
    if args.check_only:
        return answers
    if not frames:
        raise CannotRun("perf_analyzer measured no point (see the messages above)")
    figures = report(path, args.top, args.window_ms, location.reason, checks)
    print(f"wrote {path} and {path.with_suffix('.md').name}")
    return figures


#: How the report names each transport.
TRANSPORT_NAMES = {
    "grpc": "tensors in gRPC messages",
    "system": "system shared memory",
    "cuda": "CUDA shared memory",
}
#: What a report with several transports says about them.
TRANSPORTS_TEXT = (
    " Boxes out was measured with its tensors sent three ways: in the gRPC messages (`, gRPC`), "
    "in system shared memory (no suffix, as in the earlier runs; the raw exports always) and in "
    "CUDA shared memory (`, CUDA shm`): the images are copied to the GPU once, the server "
    "reads them there, and the stand-in (config parameter `FORCE_CPU_ONLY_INPUT_TENSORS: "
    '"no"`) receives them as GPU tensors through DLPack and stacks the batch on the GPU; '
    "its outputs (7.2 kB per image) still come back through host memory into the client's "
    "CUDA region."
)
#: What replaces the last sentence of ``TRANSPORTS_TEXT`` when the stand-in left the outputs of
#: GPU inputs on the GPU (``--boxes-outputs gpu``).
GPU_OUTPUTS_TEXT = (
    "its outputs (7.2 kB per image) stay on the GPU (the stand-in's `OUTPUTS_ON_GPU`, "
    "`--boxes-outputs gpu`): handed to the Python backend through DLPack and copied on the GPU "
    "into the client's CUDA region."
)
#: The machine facts (``machine_facts``) that a run's CSV carries as columns.
FACTS = ("device", "cpu", "driver", "cuda", "torch", "python", "os")


def report(
    path: Path, top: int, window_ms: int, tool: str, checks: dict[str, str] | None = None
) -> dict[str, float]:
    """Print the table of a saved run and write its .md from its CSV (a run cut short too).

    Returns the run's last-line figures.
    """
    from helpers import perf_analyzer

    results = load_results(path)
    table = summary(results)
    print(table.round(2).to_string(index=False))
    ceilings = results.groupby("model", sort=False)["ceiling_ips"].first().to_dict()
    figures = headline_figures(table, top, ceilings.get("boxes", float("nan")))
    facts = pd.read_csv(path, dtype=str, usecols=list(FACTS)).iloc[0][list(FACTS)].to_dict()
    commands = {}
    for transport, (shared_memory, _, _) in TRANSPORTS.items():
        if not (results.get("shared_memory", pd.Series(["system"])) == shared_memory).any():
            continue
        best = best_boxes(table, transport)  # the headline point's level; else the raw exports'
        batch = 1  # images per request: 1 in a CSV without the column (runs before the option)
        if best is not None and "request_batch" in results:
            batch = int(results.request_batch[results.config == best["config"]].iloc[0])
        command = perf_analyzer.build_command(
            "<model>",
            url="127.0.0.1:<grpc port>",
            concurrency=int(best["concurrency"]) if best is not None else top,
            shape={INPUT: [3, SIDE, SIDE]},
            measurement_interval_ms=window_ms,
            shared_memory=shared_memory,
            output_shared_memory_size=output_bytes("boxes") * batch,
            csv_path="<file>.csv",
            batch_size=batch,
            extra=STABILITY,
            prefix=("perf_analyzer",),
        )
        commands[transport] = " ".join(command)
    write_report(path, results, table, figures, facts, tool, commands, ceilings, checks)
    return figures


def transports_text(results: pd.DataFrame, several: bool) -> str:
    """What the report says of the transports: ``TRANSPORTS_TEXT`` for a run over ``several``,
    its last sentence as boxes out's outputs travelled; one sentence on outputs left on the GPU
    (``--boxes-outputs gpu``) for a run over one transport; else nothing."""
    on_gpu = "outputs" in results and bool((results.outputs == "gpu").any())
    if several:
        if not on_gpu:
            return TRANSPORTS_TEXT
        return TRANSPORTS_TEXT[: TRANSPORTS_TEXT.index("its outputs")] + GPU_OUTPUTS_TEXT
    if on_gpu:
        return " In CUDA shared memory, boxes out's " + GPU_OUTPUTS_TEXT.removeprefix("its ")
    return ""


def pool_text(results: pd.DataFrame) -> str:
    """A sentence on Triton's CUDA memory pool when the run set its size (``--cuda-pool-mb``)."""
    if "cuda_pool_mb" not in results or (results.cuda_pool_mb == 64).all():
        return ""
    sizes = ", ".join(f"{int(size)} MiB" for size in results.cuda_pool_mb.unique())
    return f" Triton's CUDA memory pool on GPU 0: {sizes} (`--cuda-memory-pool-byte-size`)."


def request_text(results: pd.DataFrame) -> str:
    """A sentence on boxes out's requests of several images (``--request-batch``), if any."""
    if "request_batch" not in results or (results.request_batch == 1).all():
        return ""
    sizes = ", ".join(str(int(size)) for size in results.request_batch.unique() if size > 1)
    return (
        f" Boxes out was sent in requests of {sizes} images (perf_analyzer `-b`, "
        "`--request-batch`; the configuration says so), so the server's costs per request are "
        "paid once per request of images; perf_analyzer counts each image of a request as an "
        "inference, so infer/s is images/s there too and is compared with the ceiling as it is."
    )


def threads_text(results: pd.DataFrame) -> str:
    """``threads`` per instance count in a run's results, e.g. ``1 instance: 16, 4 instances: 4``."""
    if "threads" not in results:
        return "not recorded"
    pairs = results.groupby("instances")["threads"].first()
    return ", ".join(f"{n} instance{'s' if n > 1 else ''}: {t}" for n, t in pairs.items())


def write_report(
    path: Path,
    results: pd.DataFrame,
    table: pd.DataFrame,
    figures: dict[str, float],
    facts: dict[str, str],
    tool: str,
    commands: dict[str, str],
    ceilings: dict[str, float],
    checks: dict[str, str] | None = None,
) -> Path:
    """Write ``<csv stem>.md`` beside the CSV: machine, exports, ranges of the runs, last line.

    ``commands``: perf_analyzer's command per transport measured (``TRANSPORTS``' names).
    """
    report = path.with_suffix(".md")
    if len(commands) == 1:
        command_lines = f"\n- command: `{next(iter(commands.values()))}`"
    else:
        command_lines = "".join(
            f"\n- command, {TRANSPORT_NAMES[transport]}: `{command}`"
            for transport, command in commands.items()
        )
    first = results.iloc[0]
    report.write_text(
        f"# YOLO11n TorchScript on {facts['device']}, {str(first['date'])[:10]}\n\n"
        "Measured by `python -m tools.bench gpu`: embedded Triton 2.51.0 (nvidia-pytriton "
        "0.7.0) serving through the course's **Python stand-in** for the PyTorch backend "
        "(`backends/pytorch`), KIND_GPU; not the native libtorch backend.\n\n"
        + "\n".join(f"- {key}: {value}" for key, value in facts.items())
        + f"\n- host: {first['host']}"
        + f"\n- perf_analyzer: {tool}"
        + command_lines
        + f"\n- console output of each point's first run: `{path.stem}.console.txt`\n\n"
        "`naive`: float32 input and output. `gpu`: uint8 input normalised on the GPU, float16 "
        "compute and output ([84, 8400] per image). `boxes`: the `gpu` network, then the best "
        f"class per anchor, the top {PRE_NMS_TOPK} per image, the confidence filter "
        f"({CONF_THRESHOLD}) and class-aware NMS (IoU {IOU_THRESHOLD}) on the GPU, out "
        f"[{MAX_DETECTIONS}, 6] boxes and a count per image; captured with its NMS (a "
        f"fixed-point form of greedy NMS, {NMS_ROUNDS} rounds, exact; an image that needs more "
        "is redone by torchvision after the replay) in one CUDA graph per batch size at load "
        "(`CUDA_GRAPHS`). Each instance gets CPU cores / instances torch threads "
        f"(`NUM_THREADS`; the `threads` column: {threads_text(results)}), which also stack a "
        "batch's requests into its pinned input buffer. In-process ceiling: the "
        f"same model file at batch {MAX_BATCH}, input and output on the GPU: "
        + ", ".join(f"{kind} {value:.0f} images/s" for kind, value in ceilings.items())
        + "."
        + transports_text(results, several=len(commands) > 1)
        + pool_text(results)
        + request_text(results)
        + "\n\nEach point was measured by perf_analyzer several times in a row (runs); "
        "infer/s min, median and max of the runs, latencies the medians, in ms.\n\n"
        + markdown_table(table.round(2))
        + (
            "\n\nServed outputs against the same model file in this process, on 8 random "
            "images sent at once over gRPC (a line ending in CUDA shm: through CUDA shared "
            "memory), so dynamic batching stacks them (perf_analyzer does not read "
            "outputs):\n\n" + "\n".join(f"- {config}: {text}" for config, text in checks.items())
            if checks
            else ""
        )
        + "\n\nLast line:\n\n```\n"
        + headline("gpu", figures)
        + "\n```\n"
    )
    return report
