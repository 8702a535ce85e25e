"""The GPU serving code paths on a machine without CUDA: buffers, graphs' fallback, boxes out.

The stand-ins reuse host buffers from call to call (``backends/host_buffers.py``);
these tests pin down that a buffer is reused only when no response holds a view of it, that
it grows for a batch larger than any before, and that responses never alias each other, also
through a real server. CUDA graphs need a GPU: here the stand-in must say so in the log and
serve without them. Inputs that arrive in GPU memory (CUDA shared memory with
``FORCE_CPU_ONLY_INPUT_TENSORS: "no"``) are played by fake backend tensors. The boxes-out
export's NMS step is checked on hand-made candidates.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import tritonclient.http as httpclient

from backends.host_buffers import HostBufferPool, gather, split_rows
from backends.pytorch.torch_runner import (
    GraphCaptureError,
    GraphedModule,
    graph_batch_sizes,
)
from helpers.model_config import config_from_dict
from helpers.server import STAND_INS, TritonServer
from helpers.statistics import model_stats
from tests.tiny_models import sample_batch, tiny_net
from tools.bench import gpu, headline


# ----------------------------------------------------------------------------- host buffers
def test_a_buffer_is_reused_once_its_views_are_gone():
    pool = HostBufferPool()
    pool.reserve("x", 32 * 12)
    first = pool.take("x", (8, 3), np.float32)
    address = first.__array_interface__["data"][0]
    del first
    second = pool.take("x", (8, 3), np.float32)
    assert second.__array_interface__["data"][0] == address
    assert pool.allocations == 1


def test_a_buffer_a_response_still_holds_is_not_handed_out_again():
    pool = HostBufferPool()
    held = pool.take("x", (4, 3), np.float32)
    held[:] = 7
    other = pool.take("x", (4, 3), np.float32)
    other[:] = 1
    assert not np.shares_memory(held, other)
    assert (held == 7).all()
    derived = held[1:3].view(np.uint8)  # any view of a view still counts
    del held
    third = pool.take("x", (4, 3), np.float32)
    assert not np.shares_memory(derived, third)


def test_buffers_are_sized_at_reserve_and_grow_for_a_larger_batch():
    pool = HostBufferPool()
    pool.reserve("x", 8 * 12)
    assert [b.nbytes for b in pool.buffers["x"]] == [96]
    small = pool.take("x", (8, 3), np.float32)
    assert small.shape == (8, 3) and small.dtype == np.float32
    del small
    large = pool.take("x", (20, 3), np.float32)  # larger than the last: the idle buffer grows
    assert large.shape == (20, 3)
    assert [b.nbytes for b in pool.buffers["x"]] == [240]
    del large
    assert pool.take("x", (5, 3), np.float32).base is pool.buffers["x"][0]


def test_a_full_pool_hands_out_one_off_buffers_that_alias_nothing():
    pool = HostBufferPool(per_key=2)
    held = [pool.take("x", (2,), np.int64) for _ in range(4)]
    for index, array in enumerate(held):
        array[:] = index
    assert [int(a[0]) for a in held] == [0, 1, 2, 3]
    assert len(pool.buffers["x"]) == 2 and pool.allocations == 2


def test_gather_passes_a_lone_request_on_without_a_copy():
    pool = HostBufferPool()
    lone = sample_batch(2)
    assert gather(pool, "images", [lone]) is lone
    assert pool.allocations == 0


def test_gather_stacks_requests_into_a_reused_buffer_and_split_rows_does_not_overlap():
    pool = HostBufferPool()
    parts = [sample_batch(n, seed=n) for n in (1, 3, 2)]
    stacked = gather(pool, "images", parts)
    np.testing.assert_array_equal(stacked, np.concatenate(parts))
    rows = split_rows(stacked, [1, 3, 2])
    assert [r.shape[0] for r in rows] == [1, 3, 2]
    for i, a in enumerate(rows):
        for b in rows[i + 1 :]:
            assert not np.shares_memory(a, b)
    del stacked, rows, a, b  # every view gone, loop variables included
    again = gather(pool, "images", parts[::-1])
    np.testing.assert_array_equal(again, np.concatenate(parts[::-1]))
    assert pool.allocations == 1


def test_gather_stacks_strings_without_a_raw_buffer():
    pool = HostBufferPool()
    parts = [np.array([b"a"], dtype=object), np.array([b"bc", b"d"], dtype=object)]
    assert gather(pool, "text", parts).tolist() == [b"a", b"bc", b"d"]
    assert pool.allocations == 0


# ----------------------------------------------------------------------------- CUDA graphs
@pytest.mark.parametrize(
    ("text", "sizes"),
    [(None, list(range(1, 9))), ("all", list(range(1, 9))), ("1,4, 2", [1, 2, 4, 8]), ("16", [8])],
)
def test_graph_batch_sizes_always_cover_the_max_batch(text, sizes):
    assert graph_batch_sizes(text, 8) == sizes


def test_graph_capture_without_cuda_raises_a_clear_error():
    with pytest.raises(GraphCaptureError, match="need a CUDA device"):
        GraphedModule(tiny_net(), [((3, 16, 16), torch.float32)], [1, 2], torch.device("cpu"))


def _graphs_repository(root: Path) -> Path:
    """tiny_torchscript with CUDA_GRAPHS on and dynamic batching, on a CPU instance."""
    folder = root / "tiny_graphs"
    (folder / "1").mkdir(parents=True)
    torch.jit.trace(tiny_net(), torch.from_numpy(sample_batch(1))).save(str(folder / "1/model.pt"))
    (folder / "config.pbtxt").write_text(
        'name: "tiny_graphs"\nplatform: "pytorch_libtorch"\nmax_batch_size: 8\n'
        'input [ { name: "INPUT__0", data_type: TYPE_FP32, dims: [ 3, 16, 16 ] } ]\n'
        'output [ { name: "OUTPUT__0", data_type: TYPE_FP32, dims: [ 4 ] } ]\n'
        "dynamic_batching { max_queue_delay_microseconds: 20000 }\n"
        'parameters { key: "CUDA_GRAPHS" value { string_value: "true" } }\n'
        'parameters { key: "FORCE_CPU_ONLY_INPUT_TENSORS" value { string_value: "no" } }\n'
        "instance_group [ { kind: KIND_CPU, count: 1 } ]\n"
    )
    return root


def test_served_batches_never_mix_up_responses_and_graphs_fall_back_on_the_cpu(tmp_path: Path):
    """16 concurrent requests of distinct images through dynamic batching and reused buffers."""
    repository = _graphs_repository(tmp_path)
    inputs = [sample_batch(1 + i % 3, seed=i) for i in range(16)]
    with TritonServer(repository, models=["tiny_graphs"]) as server:

        def infer(array: np.ndarray) -> np.ndarray:
            tensor = httpclient.InferInput("INPUT__0", list(array.shape), "FP32")
            tensor.set_data_from_numpy(array)
            return server.http_client().infer("tiny_graphs", [tensor]).as_numpy("OUTPUT__0")

        for _ in range(2):  # the second round runs on buffers the first one left behind
            with ThreadPoolExecutor(16) as threads:
                results = list(threads.map(infer, inputs))
            with torch.inference_mode():
                expected = [tiny_net()(torch.from_numpy(a)).numpy() for a in inputs]
            for got, want in zip(results, expected):
                np.testing.assert_allclose(got, want, atol=1e-5)
        stats = model_stats(server.http_client(), "tiny_graphs")
        log = server.log_tail(200, containing=["tiny_graphs"])
    assert max(stats.batches) > 3  # batches were formed
    assert "CUDA_GRAPHS asked, but this instance runs on the CPU: no CUDA graphs" in log
    assert "FORCE_CPU_ONLY_INPUT_TENSORS" not in log  # the Python backend's own: no warning


# ----------------------------------------------------------------------------- GPU inputs
class _BackendTensor:
    """Plays ``pb_utils.Tensor``: host memory (numpy) or "GPU" memory (a torch tensor)."""

    def __init__(self, value: np.ndarray | torch.Tensor):
        self.value = value

    def is_cpu(self) -> bool:
        return isinstance(self.value, np.ndarray)

    def as_numpy(self) -> np.ndarray:
        return self.value

    def to_dlpack(self):
        return torch.utils.dlpack.to_dlpack(self.value)


@pytest.fixture
def stand_ins(monkeypatch):
    """The stand-ins' ``runtime_base`` and PyTorch ``model`` imported as the stub imports them."""
    fake = types.ModuleType("triton_python_backend_utils")
    fake.triton_string_to_numpy = lambda name: np.dtype(name[5:].lower().replace("fp", "float"))
    fake.get_input_tensor_by_name = lambda request, name: request.get(name)
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake)
    monkeypatch.syspath_prepend(str(STAND_INS))
    monkeypatch.syspath_prepend(str(STAND_INS / "pytorch"))
    stub_modules = ("runtime_base", "host_buffers", "torch_runner")
    spec = importlib.util.spec_from_file_location(
        "pytorch_stand_in", STAND_INS / "pytorch/model.py"
    )
    model = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(model)
    yield sys.modules["runtime_base"], model
    for name in stub_modules:
        sys.modules.pop(name, None)


def _pytorch_instance(model, runtime_base):
    """A PyTorch stand-in instance on the CPU, set up as ``initialize`` would for uint8 images."""
    instance = model.TritonPythonModel()
    instance.model_name, instance.max_batch_size = "tiny", 8
    instance.inputs = [{"name": "INPUT__0", "data_type": "TYPE_UINT8", "dims": [3, 4, 4]}]
    instance.device = torch.device("cpu")
    instance.host_buffers = runtime_base.HostBufferPool(instance.allocate_host)
    return instance


def test_a_gpu_input_is_read_through_dlpack_without_a_copy_and_checked(stand_ins):
    runtime_base, model = stand_ins
    instance = _pytorch_instance(model, runtime_base)
    on_gpu = torch.randint(0, 255, (2, 3, 4, 4), dtype=torch.uint8)  # plays GPU memory
    arrays = instance.read_request({"INPUT__0": _BackendTensor(on_gpu)})
    assert isinstance(arrays["INPUT__0"], torch.Tensor)
    assert arrays["INPUT__0"].data_ptr() == on_gpu.data_ptr()  # the same memory
    with pytest.raises(runtime_base.BadRequest, match="expected UINT8, got torch.float32"):
        instance.read_request({"INPUT__0": _BackendTensor(on_gpu.float())})
    with pytest.raises(runtime_base.BadRequest, match=r"expected shape \[3, 4, 4\], got \[4, 4\]"):
        instance.read_request({"INPUT__0": _BackendTensor(on_gpu[:, 0])})
    with pytest.raises(runtime_base.BadRequest, match="is empty"):
        instance.read_request({"INPUT__0": _BackendTensor(on_gpu[:0])})


def test_a_batch_with_gpu_inputs_is_stacked_as_one_tensor_in_request_order(stand_ins):
    runtime_base, model = stand_ins
    instance = _pytorch_instance(model, runtime_base)
    parts = [
        torch.full((1, 3, 4, 4), 1, dtype=torch.uint8),  # GPU inputs
        np.full((2, 3, 4, 4), 2, dtype=np.uint8),  # a host input in the same batch
        torch.full((1, 3, 4, 4), 3, dtype=torch.uint8),
    ]
    stacked = instance.stack("INPUT__0", parts)
    assert isinstance(stacked, torch.Tensor)
    assert stacked[:, 0, 0, 0].tolist() == [1, 2, 2, 3]
    assert instance.stack("INPUT__0", parts[:1]) is parts[0]  # a lone request: as it came
    host = instance.stack("INPUT__0", [parts[1], parts[1]])  # host only: the pinned buffer path
    assert isinstance(host, np.ndarray) and instance.host_buffers.allocations == 1


def test_a_stand_in_that_cannot_take_gpu_inputs_says_which_parameter_to_change(stand_ins):
    runtime_base, _ = stand_ins
    instance = runtime_base.StandInModel()
    instance.backend_name = "onnxruntime"
    with pytest.raises(runtime_base.BadRequest, match="FORCE_CPU_ONLY_INPUT_TENSORS unset"):
        instance.input_array("images", _BackendTensor(torch.zeros(1)))
    host = np.zeros(3, dtype=np.float32)
    assert instance.input_array("images", _BackendTensor(host)) is host


# ----------------------------------------------------------------------------- boxes out
class _GivenCandidates(torch.nn.Module):
    """Stands in for the traced network: returns the candidates it was built with."""

    def __init__(self, boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor):
        super().__init__()
        self.boxes, self.scores, self.classes = boxes, scores, classes

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.boxes, self.scores, self.classes


def _candidates() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two images: in image 0 two overlapping boxes of one class, one of another class, one
    below the threshold; image 1 holds a copy of image 0's first box (another image: kept)."""
    boxes = torch.tensor(
        [
            [[0, 0, 10, 10], [0.5, 0.5, 10.5, 10.5], [1, 1, 11, 11], [50, 50, 60, 60]],
            [[0, 0, 10, 10], [0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1]],
        ],
        dtype=torch.float32,
    )
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.1], [0.6, 0.0, 0.0, 0.0]])
    classes = torch.tensor([[3.0, 3.0, 5.0, 3.0], [3.0, 0.0, 0.0, 0.0]])
    return boxes, scores, classes


@pytest.mark.parametrize("scripted", [False, True], ids=["eager", "torchscript"])
def test_boxes_finish_runs_class_aware_nms_per_image_and_pads(scripted: bool):
    candidates = _candidates()
    module = gpu.Boxes(_GivenCandidates(*candidates), max_det=3)
    if scripted:
        module = torch.jit.script(module)
    detections, count = module(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
    assert detections.shape == (2, 3, 6) and count.dtype == torch.int32
    assert count.flatten().tolist() == [2, 1]
    np.testing.assert_allclose(
        detections[0, :2].numpy(),
        [[0, 0, 10, 10, 0.9, 3], [1, 1, 11, 11, 0.7, 5]],  # 0.8 suppressed: same class, IoU 0.82
        rtol=1e-6,
    )
    np.testing.assert_allclose(detections[1, 0].numpy(), [0, 0, 10, 10, 0.6, 3], rtol=1e-6)
    assert (detections[0, 2] == 0).all() and (detections[1, 1:] == 0).all()  # padding


def test_boxes_nms_caps_each_image_at_max_det():
    boxes = torch.tensor([[[i * 20.0, 0, i * 20 + 10, 10] for i in range(5)]])
    scores = torch.linspace(0.9, 0.5, 5).unsqueeze(0)
    detections, count, unsettled = gpu.Boxes(torch.nn.Identity(), max_det=3).select(
        boxes, scores, torch.zeros(1, 5)
    )
    assert count.item() == 3 and not unsettled.any()
    np.testing.assert_allclose(detections[0, :, 4].numpy(), [0.9, 0.8, 0.7], rtol=1e-6)


def _chain(length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One image, one class: boxes shifted a step each, so each suppresses the next (IoU 0.82)
    but not the one after (IoU 0.67): greedy keeps every other box, a chain ``length`` long."""
    boxes = torch.tensor([[[i * 1.0, 0, i + 10.0, 10] for i in range(length)]])
    scores = torch.linspace(0.9, 0.5, length).unsqueeze(0)
    return boxes, scores, torch.zeros(1, length)


def test_a_chain_longer_than_the_rounds_is_flagged_and_finish_redoes_it_exactly():
    module = gpu.Boxes(torch.nn.Identity(), max_det=30, rounds=3)
    candidates = _chain(12)
    detections, count, unsettled = module.select(*candidates)
    assert unsettled.tolist() == [True]  # three rounds are not enough for a 12-long chain
    detections, count = module.finish(detections, count, unsettled, *candidates)
    assert count.item() == 6
    np.testing.assert_allclose(detections[0, :6, 0].numpy(), [0, 2, 4, 6, 8, 10])
    settled = gpu.Boxes(torch.nn.Identity(), max_det=30, rounds=13).select(*candidates)
    assert not settled[2].any()
    np.testing.assert_allclose(settled[0].numpy(), detections.numpy())


def test_boxes_config_is_valid_and_asks_for_cuda_graphs():
    config = gpu.model_config("yolo11n_ts_boxes", "boxes")
    config_from_dict(config)
    assert [o["dims"] for o in config["output"]] == [[gpu.MAX_DETECTIONS, 6], [1]]
    assert config["parameters"]["CUDA_GRAPHS"] == {"string_value": "true"}
    # inputs sent in GPU memory (CUDA shared memory) reach the stand-in there, not via the host
    assert config["parameters"]["FORCE_CPU_ONLY_INPUT_TENSORS"] == {"string_value": "no"}
    assert gpu.output_bytes("boxes") == math.prod(config["output"][0]["dims"]) * 4


# ----------------------------------------------------------------------------- the report
def test_headline_takes_medians_and_the_best_boxes_point():
    rows = []
    for config, level, values in [
        ("gpu, batching off, 1 instance(s)", 32, [100, 120, 110]),
        ("gpu, batching on, 1 instance(s)", 32, [400, 420, 500]),
        ("gpu, batching on, 2 instance(s)", 32, [440, 450, 460]),
        ("boxes, batching on, 1 instance(s)", 32, [1900, 2000, 2100]),
        ("boxes, batching on, 1 instance(s)", 64, [2200, 2300, 1000]),
    ]:
        rows += [
            {
                "config": config,
                "concurrency": level,
                "throughput_infer_per_s": v,
                "latency_p50_ms": 10.0,
                "latency_p99_ms": 20.0 + i,
            }
            for i, v in enumerate(values)
        ]
    table = gpu.summary(pd.DataFrame(rows))
    assert table[["min", "median", "max"]].iloc[1].tolist() == [400, 420, 500]
    figures = gpu.headline_figures(table, 32, ceiling=4400)
    assert figures["gain"] == pytest.approx(420 / 110)
    assert figures["boxes_ips"] == 2200 and figures["boxes_c"] == 64
    assert figures["ceiling_ratio"] == pytest.approx(0.5)
    assert figures["boxes_p99_ms"] == 21.0
    line = headline("gpu", figures)
    assert line.endswith("boxes_ips=2200 ceiling_ratio=0.5")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fixed_point_nms_equals_torchvision_batched_nms_image_by_image(seed: int):
    import torchvision

    generator = torch.Generator().manual_seed(seed)
    corner = torch.rand(5, 60, 2, generator=generator) * 100
    boxes = torch.cat((corner, corner + torch.rand(5, 60, 2, generator=generator) * 40 + 1), 2)
    scores = torch.rand(5, 60, generator=generator)
    classes = torch.randint(0, 3, (5, 60), generator=generator).float()
    module = gpu.Boxes(torch.nn.Identity(), max_det=30)
    detections, count, unsettled = module.select(boxes, scores, classes)
    assert not unsettled.any()
    by_torchvision = module.torchvision_nms(boxes, scores, classes)
    np.testing.assert_allclose(detections.numpy(), by_torchvision[0].numpy())
    assert count.tolist() == by_torchvision[1].tolist()
    for image in range(5):
        keep = scores[image] > gpu.CONF_THRESHOLD
        b, s, c = boxes[image][keep], scores[image][keep], classes[image][keep]
        kept = torchvision.ops.batched_nms(b, s, c.long(), gpu.IOU_THRESHOLD)[:30]
        want = torch.cat((b[kept], s[kept, None], c[kept, None]), 1)
        assert count[image].item() == len(kept)
        np.testing.assert_allclose(detections[image, : len(kept)].numpy(), want.numpy())


def test_equal_scores_give_the_same_boxes_in_both_nms_forms():
    """Random weights give every candidate the same score: ties go to the first candidate."""
    generator = torch.Generator().manual_seed(4)
    corner = torch.rand(3, 80, 2, generator=generator) * 60
    boxes = torch.cat((corner, corner + torch.rand(3, 80, 2, generator=generator) * 40 + 1), 2)
    scores = torch.full((3, 80), 0.5)
    classes = torch.randint(0, 2, (3, 80), generator=generator).float()
    module = gpu.Boxes(torch.nn.Identity(), max_det=50)
    detections, count, unsettled = module.select(boxes, scores, classes)
    assert not unsettled.any()
    exact = module.torchvision_nms(boxes, scores, classes)
    assert torch.equal(detections, exact[0]) and torch.equal(count, exact[1])
