"""Bad inputs to every model the course serves, and file paths given to the helpers.

One Triton server serves YOLO11n ONNX, YOLO11n TorchScript and faster-whisper (the course's
configs, 640x640 for YOLO); the FastAPI baseline runs under uvicorn. Each bad request must
get an error that names the problem, leave the server process running (same pid), and be
followed by a good request that gets the right answer. tests/test_server.py,
tests/test_whisper.py and tests/test_fastapi_baseline.py already cover the tiny models'
bad inputs, Whisper's empty/garbage/truncated/PNG files and the FastAPI header checks;
these cases are the others.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from tritonclient.utils import InferenceServerException

from helpers import speech
from helpers.clients import infer
from helpers.export import run_torchscript
from helpers.fastapi_server import FastAPIServer
from helpers.lessons.whisper import transcribe
from helpers.lessons.yolo_client import preprocess
from helpers.netron_view import NetronServer
from helpers.paths import MODEL_REPOSITORY
from helpers.repository import missing_model_file
from helpers.server import ModelLoadError, TritonServer
from helpers.speech import load_samples, read_wav
from helpers.statistics import model_stats, settled_stats
from helpers.yolo import load_image, sample_image_path
from tests.reliability_models import add_model, yolo11n_files

ONNX, TORCHSCRIPT, WHISPER = "yolo11n_onnx", "yolo11n_torchscript", speech.MODEL_NAME
INPUT_NAMES = {ONNX: "images", TORCHSCRIPT: "INPUT__0"}
OUTPUT_NAMES = {ONNX: "output0", TORCHSCRIPT: "OUTPUT__0"}
SPEECH = {sample.name: sample for sample in load_samples()}["thank_you"]
FIFTY_MB = 50 * 2**20


pytestmark = pytest.mark.usefixtures("no_leftover_server_processes")


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The course's configs with YOLO11n files; folders that are never loaded or have no file."""
    files = yolo11n_files(tmp_path_factory)
    root = tmp_path_factory.mktemp("reliability_inputs")
    add_model(root, ONNX, ONNX, files["onnx"])
    add_model(root, TORCHSCRIPT, TORCHSCRIPT, files["torchscript"])
    add_model(root, WHISPER, WHISPER)
    add_model(root, "yolo11n_onnx_spare", ONNX, files["onnx"])  # in the repository, not loaded
    add_model(root, "yolo11s_onnx", ONNX)  # no model file: notebook 01 would export it
    add_model(root, "yolo11n_onnx_ortopt", "yolo11n_onnx_ortopt")  # no file: notebook 02
    for model, kind in ((ONNX, "onnx"), (TORCHSCRIPT, "torchscript")):  # the NaN test's
        add_model(root, f"{model}_five", model, files[kind], config=batch_of_five(model))
    return root


@pytest.fixture(scope="module")
def server(repository: Path):
    with TritonServer(repository, models=[ONNX, TORCHSCRIPT, WHISPER]) as running:
        yield running


@pytest.fixture(scope="module")
def bus() -> np.ndarray:
    """bus.jpg preprocessed: float32 [1, 3, 640, 640]."""
    return preprocess(load_image(sample_image_path("bus.jpg")))[0]


@pytest.fixture(scope="module")
def expected(repository: Path, bus: np.ndarray) -> dict[str, np.ndarray]:
    """YOLO11n's output for bus.jpg, computed in this process by each runtime."""
    session = ort.InferenceSession(str(repository / ONNX / "1" / "model.onnx"))
    return {
        ONNX: session.run(None, {"images": bus})[0],
        TORCHSCRIPT: run_torchscript(repository / TORCHSCRIPT / "1" / "model.pt", bus),
    }


@pytest.fixture(scope="module")
def transcript(server: TritonServer) -> str:
    """What the served model hears in the speech sample before any bad request."""
    with server.http_client() as client:
        text = transcribe(client, SPEECH.read_bytes()).text
    assert text == "Thank you for listening."
    return text


def assert_still_serving(
    server: TritonServer, pid: int, model: str, bus: np.ndarray, expected: dict, transcript: str
) -> None:
    """Same server process, and a good request to ``model`` gets the right answer."""
    assert server.is_running() and server.pid == pid
    if model == WHISPER:
        with server.http_client() as client:
            assert transcribe(client, SPEECH.read_bytes()).text == transcript
    else:
        outputs = infer(server, model, {INPUT_NAMES[model]: bus}, protocol="http")
        output = outputs[OUTPUT_NAMES[model]]
        np.testing.assert_allclose(output, expected[model], atol=1e-3, rtol=1e-3)


# ----------------------------------------------------------------------------- tensors
def yolo(model: str, array: Callable[[], np.ndarray], name: str = "") -> Callable[[], dict]:
    return lambda: {name or INPUT_NAMES[model]: array()}


def image(*shape: int, dtype: type = np.float32) -> Callable[[], np.ndarray]:
    return lambda: np.full(shape, 0.5, dtype=dtype)


def audio(*files: bytes, **extra: np.ndarray) -> Callable[[], dict]:
    return lambda: {"AUDIO": np.array([[f] for f in files], dtype=np.object_), **extra}


def damaged_wav(start: int, replacement: bytes) -> bytes:
    data = bytearray(SPEECH.read_bytes())
    data[start : start + len(replacement)] = replacement
    return bytes(data)


GOOD_WAV = SPEECH.read_bytes()
# (id, model, protocol, inputs, version, words the error must contain)
TENSOR_CASES = [
    ("onnx-wrong-input-name", ONNX, "http", yolo(ONNX, image(1, 3, 640, 640), "image"), "",
     ["unexpected inference input 'image'", ONNX]),
    ("onnx-wrong-shape", ONNX, "grpc", yolo(ONNX, image(1, 3, 320, 320)), "",
     ["unexpected shape for input 'images'", "Expected [-1,3,640,640], got [1,3,320,320]"]),
    ("onnx-wrong-dtype", ONNX, "http", yolo(ONNX, image(1, 3, 640, 640, dtype=np.float16)), "",
     ["input 'images' data-type is 'FP16'", "expects 'FP32'"]),
    ("onnx-batch-above-max", ONNX, "grpc", yolo(ONNX, image(9, 3, 640, 640)), "",
     ["batch-size must be <= 8", ONNX]),
    ("onnx-empty-tensor", ONNX, "http", yolo(ONNX, image(0, 3, 640, 640)), "",
     ["input byte size mismatch for input 'images'", "got 0"]),
    ("onnx-50MB-payload", ONNX, "http", yolo(ONNX, image(1, 3, 2365, 1774)), "",
     ["unexpected shape for input 'images'", "got [1,3,2365,1774]"]),
    ("onnx-50MB-payload-grpc", ONNX, "grpc", yolo(ONNX, image(1, 3, 2365, 1774)), "",
     ["unexpected shape for input 'images'", "got [1,3,2365,1774]"]),
    ("onnx-unknown-version", ONNX, "grpc", yolo(ONNX, image(1, 3, 640, 640)), "7",
     [f"'{ONNX}' version 7 is not found"]),
    ("unknown-model", "yolo11x_onnx", "http", yolo(ONNX, image(1, 3, 640, 640)), "",
     ["Request for unknown model: 'yolo11x_onnx' is not found"]),
    ("model-not-loaded", "yolo11n_onnx_spare", "grpc", yolo(ONNX, image(1, 3, 640, 640)), "",
     ["unknown model: 'yolo11n_onnx_spare' is not found"]),
    ("torchscript-wrong-input-name", TORCHSCRIPT, "grpc",
     yolo(TORCHSCRIPT, image(1, 3, 640, 640), "images"), "",
     ["unexpected inference input 'images'", TORCHSCRIPT]),
    ("torchscript-wrong-shape", TORCHSCRIPT, "http", yolo(TORCHSCRIPT, image(1, 3, 640, 480)), "",
     ["unexpected shape for input 'INPUT__0'", "got [1,3,640,480]"]),
    ("torchscript-wrong-dtype", TORCHSCRIPT, "grpc",
     yolo(TORCHSCRIPT, image(1, 3, 640, 640, dtype=np.float64)), "",
     ["input 'INPUT__0' data-type is 'FP64'", "expects 'FP32'"]),
    ("torchscript-batch-above-max", TORCHSCRIPT, "http", yolo(TORCHSCRIPT, image(9, 3, 640, 640)),
     "", ["batch-size must be <= 8", TORCHSCRIPT]),
    ("torchscript-empty-tensor", TORCHSCRIPT, "grpc", yolo(TORCHSCRIPT, image(0, 3, 640, 640)),
     "", ["input byte size mismatch for input 'INPUT__0'", "got 0"]),
    ("whisper-wrong-input-name", WHISPER, "http",
     lambda: {"audio": np.array([[GOOD_WAV]], dtype=np.object_)}, "",
     ["unexpected inference input 'audio'", WHISPER]),
    ("whisper-wrong-shape", WHISPER, "grpc",
     lambda: {"AUDIO": np.array([[GOOD_WAV, GOOD_WAV]], dtype=np.object_)}, "",
     ["unexpected shape for input 'AUDIO'", "Expected [-1,1], got [1,2]"]),
    ("whisper-wrong-dtype", WHISPER, "http",
     audio(GOOD_WAV, BEAM_SIZE=np.array([[5.0]], np.float32)), "",
     ["input 'BEAM_SIZE' data-type is 'FP32'", "expects 'INT32'"]),
    ("whisper-batch-above-max", WHISPER, "grpc", audio(*[GOOD_WAV] * 5), "",
     ["batch-size must be <= 4", WHISPER]),
    ("whisper-empty-tensor", WHISPER, "http",
     lambda: {"AUDIO": np.zeros((0, 1), dtype=np.object_)}, "",
     ["input 'AUDIO'", "got 0"]),
    ("whisper-out-of-range-option", WHISPER, "grpc",
     audio(GOOD_WAV, BEAM_SIZE=np.array([[0]], np.int32)), "",
     ["BEAM_SIZE must be between 1 and 20, not 0"]),
    ("whisper-corrupt-header", WHISPER, "http", audio(damaged_wav(8, b"XXXXXXXX")), "",
     ["AUDIO is not an audio file PyAV can read"]),
    ("whisper-corrupt-format-chunk", WHISPER, "grpc", audio(damaged_wav(22, b"\0\0")), "",
     ["AUDIO (wav) could not be decoded"]),
    ("whisper-50MB-payload", WHISPER, "http",
     lambda: audio(np.random.default_rng(0).bytes(FIFTY_MB))(), "",
     ["AUDIO is not an audio file PyAV can read (52428800 bytes"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("model", "protocol", "inputs", "version", "words"),
    [pytest.param(*case[1:], id=case[0]) for case in TENSOR_CASES],
)
def test_a_bad_request_is_named_and_the_next_good_one_is_answered(
    server, bus, expected, transcript, model, protocol, inputs, version, words
):
    pid = server.pid
    with pytest.raises(InferenceServerException) as error:
        infer(server, model, inputs(), protocol=protocol, version=version)
    for word in words:
        assert word in error.value.message(), error.value.message()
    good_model = model if model in (ONNX, TORCHSCRIPT, WHISPER) else ONNX
    assert_still_serving(server, pid, good_model, bus, expected, transcript)


# ----------------------------------------------------------------------------- raw HTTP
def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, headers=headers or {}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


HEADER = {"name": "images", "shape": [1, 3, 640, 640], "datatype": "FP32"}
BINARY_HEADER = {"inputs": [{**HEADER, "parameters": {"binary_data_size": 4915200}}]}


def binary_request(binary: bytes, header_length: int | None = None) -> tuple[bytes, dict]:
    """A binary-tensor request: JSON header, raw bytes, and the header's length in a header."""
    text = json.dumps(BINARY_HEADER).encode()
    return text + binary, {"Inference-Header-Content-Length": str(header_length or len(text))}


RAW_CASES = [
    ("malformed-json", (b'{"inputs": [ {"name": "images",', {}), 500,
     "failed to parse the request JSON buffer"),
    ("json-inputs-not-a-list", (b'{"inputs": 5}', {}), 500, "Unable to parse 'inputs'"),
    ("json-data-too-short", (json.dumps({"inputs": [{**HEADER, "data": [0.5] * 10}]}).encode(), {}),
     500, "Shape does not match true shape of 'data' field"),
    ("binary-header-length-too-big", binary_request(b"", header_length=99999), 400,
     "inference header size should be in range"),
    ("binary-data-truncated", binary_request(b"\0" * 1000), 400,
     "unexpected size for input 'images', expecting 4914200 additional bytes"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("request_parts", "status", "words"), [pytest.param(*c[1:], id=c[0]) for c in RAW_CASES]
)
def test_a_malformed_http_request_is_named_and_the_next_good_one_is_answered(
    server, bus, expected, transcript, request_parts, status, words
):
    pid = server.pid
    body, headers = request_parts
    got, text = post(f"http://{server.http_url}/v2/models/{ONNX}/infer", body, headers)
    assert (got, words in text) == (status, True), text
    assert_still_serving(server, pid, ONNX, bus, expected, transcript)


# ----------------------------------------------------------------------------- NaN and inf
#: The NaN test's batch: one request with NaN/inf and four good neighbours.
BATCH = 5
#: Threads of the NaN test's served instance and of its in-process reference: the same
#: computation on both sides (the CPU kernels' blocking may depend on the thread count).
THREADS = 1
#: Config parameter that sets each runtime's intra-op threads (native backend's names).
THREAD_PARAMETER = {ONNX: "intra_op_thread_count", TORCHSCRIPT: "NUM_THREADS"}


def batch_of_five(model: str) -> str:
    """``model``'s committed config, its batcher holding requests until exactly ``BATCH`` wait.

    On the CPU the last digits of an output depend on the batch size the runtime ran (its
    kernels block the work differently), so a timing-dependent batch cannot be compared with
    a reference of another size; with a preferred batch of 5 and a long queue delay the five
    requests always run as one batch of five.
    """
    text = (MODEL_REPOSITORY / model / "config.pbtxt").read_text()
    assert "dynamic_batching { }" in text, f"{model}'s config changed: update this test"
    batcher = (
        f"dynamic_batching {{ preferred_batch_size: [ {BATCH} ] "
        "max_queue_delay_microseconds: 30000000 }"
    )
    threads = (
        f'parameters {{ key: "{THREAD_PARAMETER[model]}" '
        f'value: {{ string_value: "{THREADS}" }} }}\n'
    )
    return text.replace("dynamic_batching { }", batcher) + threads


def reference_batch(repository: Path, model: str, batch: np.ndarray) -> np.ndarray:
    """The NaN test's variant of ``model`` run in this process on ``batch``, ``THREADS`` threads."""
    path = repository / f"{model}_five" / "1"
    if model == ONNX:
        options = ort.SessionOptions()
        options.intra_op_num_threads = THREADS
        session = ort.InferenceSession(str(path / "model.onnx"), options)
        return session.run(None, {"images": batch})[0]
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        return run_torchscript(path / "model.pt", batch)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("model", [ONNX, TORCHSCRIPT])
def test_nan_and_inf_stay_in_their_own_request_of_a_batch(server, repository, model):
    """Triton and its backends pass NaN/inf through (the native backends do too), so they
    are no error: the sender gets non-finite numbers back, and its batch neighbours must get
    what the same batch gives in this process, finite."""
    rng = np.random.default_rng(7)
    good = [rng.random((1, 3, 640, 640), dtype=np.float32) for _ in range(BATCH - 1)]
    bad = good[0].copy()
    bad[0, 0, :10, :10] = np.nan
    bad[0, 1, 100, 100:110] = np.inf
    reference = reference_batch(repository, model, np.concatenate([bad, *good]))
    assert np.isfinite(reference[1:]).all()  # in-process too, NaN stays in its own row
    name = f"{model}_five"
    server.load_model(name)
    try:
        client = server.http_client()
        before = model_stats(client, name)
        with ThreadPoolExecutor(BATCH) as pool:
            outputs = list(
                pool.map(
                    lambda array: infer(server, name, {INPUT_NAMES[model]: array})[
                        OUTPUT_NAMES[model]
                    ],
                    [bad, *good],
                )
            )
        delta = settled_stats(client, name, before.success_count + BATCH) - before
    finally:
        server.unload_model(name)
    assert delta.batches == {BATCH: 1}  # the five ran together, as one batch
    assert delta.inference_count == BATCH
    assert not np.isfinite(outputs[0]).all()
    for served, expected in zip(outputs[1:], reference[1:]):
        assert np.isfinite(served).all()
        # The same batch, runtime and threads: the same arithmetic (measured: bit-identical);
        # allowed float32 rounding only.
        np.testing.assert_allclose(served[0], expected, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- FastAPI
@pytest.fixture(scope="module")
def fastapi(server):  # after Triton's fixtures: both servers are up during these tests
    with FastAPIServer(torch_threads=1) as running:
        yield running


def fastapi_predict(server: FastAPIServer, body: bytes, shape: str) -> tuple[int, bytes, str]:
    headers = {"Content-Type": "application/octet-stream", "X-Shape": shape}
    request = urllib.request.Request(server.url + "/predict", data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=120) as reply:
            return reply.status, reply.read(), reply.headers["x-shape"]
    except urllib.error.HTTPError as error:
        return error.code, error.read(), ""


def test_fastapi_bad_requests_are_named_and_the_next_good_one_is_answered(fastapi, bus):
    pid = fastapi.pid
    status, good_body, shape = fastapi_predict(fastapi, bus.tobytes(), "1,3,640,640")
    assert (status, shape) == (200, "1,84,8400")
    cases = {
        "50MB-payload": (np.zeros(FIFTY_MB // 4, np.float32).tobytes(), "1,3,640,640", 400,
                         "body has 52428800 bytes, but float32 of shape [1, 3, 640, 640] needs 4915200"),
        "wrong-dtype": (bus.astype(np.float64).tobytes(), "1,3,640,640", 400,
                        "body has 9830400 bytes"),
        "empty-tensor": (b"", "0,3,640,640", 400, "1 <= N <= 8, got '0,3,640,640'"),
    }  # fmt: skip
    for name, (body, x_shape, expected_status, words) in cases.items():
        status, reply, _ = fastapi_predict(fastapi, body, x_shape)
        assert (status, words in reply.decode()) == (expected_status, True), (name, reply[:300])
        assert fastapi.is_running() and fastapi.pid == pid
        assert_same_bytes(fastapi_predict(fastapi, bus.tobytes(), "1,3,640,640")[1], good_body)
    status, reply = post(fastapi.url + "/v2/models/yolo11n_onnx/infer", b"{}")  # Triton's route
    assert (status, json.loads(reply)) == (404, {"detail": "Not Found"})
    nan = bus.copy()
    nan[0, 0, 0, :50] = np.nan
    status, reply, _ = fastapi_predict(fastapi, nan.tobytes(), "1,3,640,640")
    assert status == 200 and not np.isfinite(np.frombuffer(reply, np.float32)).all()
    assert_same_bytes(fastapi_predict(fastapi, bus.tobytes(), "1,3,640,640")[1], good_body)
    assert fastapi.pid == pid


def assert_same_bytes(got: bytes, expected: bytes) -> None:
    """Two float32 outputs of the baseline agree (same input, same process, same threads)."""
    np.testing.assert_allclose(
        np.frombuffer(got, np.float32), np.frombuffer(expected, np.float32), atol=1e-4
    )


# ----------------------------------------------------------------------------- files
def test_a_missing_model_file_is_named_with_the_notebook_that_creates_it(server, repository):
    for model, path, notebook in [
        ("yolo11s_onnx", "yolo11s_onnx/1/model.onnx", "notebook 01 (01_onnx_export_and_inspection)"),
        ("yolo11n_onnx_ortopt", "yolo11n_onnx_ortopt/1/model.onnx",
         "notebook 02 (02_tensorrt_engine_builds)"),
    ]:  # fmt: skip
        with pytest.raises(ModelLoadError) as error:
            server.load_model(model)
        assert f"{repository / path} is missing: {notebook} creates it" in str(error.value)
    assert server.model_ready(ONNX) and server.is_running()


def test_missing_model_file_follows_the_version_policy_and_shows_course_paths(tmp_path):
    folder = tmp_path / ONNX
    folder.mkdir()
    (folder / "config.pbtxt").write_text((MODEL_REPOSITORY / ONNX / "config.pbtxt").read_text())
    notebook_01 = "is missing: notebook 01 (01_onnx_export_and_inspection) creates it"
    assert missing_model_file(tmp_path, ONNX) == f"{folder / '1' / 'model.onnx'} {notebook_01}"
    (folder / "1").mkdir()
    (folder / "1" / "model.onnx").write_bytes(b"exported")
    assert missing_model_file(tmp_path, ONNX) == ""
    (folder / "2").mkdir()  # the latest version is the one Triton loads by default
    assert missing_model_file(tmp_path, ONNX) == f"{folder / '2' / 'model.onnx'} {notebook_01}"
    only_1 = {"platform": "onnxruntime_onnx", "version_policy": {"specific": {"versions": [1]}}}
    assert missing_model_file(tmp_path, ONNX, config=json.dumps(only_1)) == ""
    assert missing_model_file(tmp_path, "absent") == ""  # Triton names unknown models itself
    if not (MODEL_REPOSITORY / "yolo11n_trt" / "1" / "model.plan").exists():  # no GPU build here
        assert missing_model_file(MODEL_REPOSITORY, "yolo11n_trt") == (
            "model_repository/yolo11n_trt/1/model.plan is missing: "
            "notebook 02 (02_tensorrt_engine_builds) creates it"
        )
    assert missing_model_file(MODEL_REPOSITORY, WHISPER) == ""  # model.py is committed


def test_image_and_audio_paths_are_checked(tmp_path):
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(sample_image_path("bus.jpg").read_bytes()[:40_000])
    with pytest.raises(ValueError, match=f"{truncated} is damaged: image file is truncated"):
        load_image(truncated)
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"\xff\xd8\xff\xe0" + bytes(1000))
    with pytest.raises(ValueError, match=f"cannot read an image from {garbage}: not an image"):
        load_image(garbage)
    with pytest.raises(FileNotFoundError, match=f"no image file at {tmp_path / 'nope.jpg'}"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope.wav")):
        read_wav(tmp_path / "nope.wav")
    with pytest.raises(FileNotFoundError, match=f"no model file at {tmp_path / 'nope.onnx'}"):
        NetronServer(tmp_path / "nope.onnx")
