"""helpers.speech: committed samples, WAV encoding, espeak-ng synthesis, WER, waveform plot."""

from __future__ import annotations

import json
import shutil
import wave

import matplotlib
import numpy as np
import pytest

from helpers import speech
from tests.conftest import require_system

matplotlib.use("Agg")


def test_committed_samples_are_small_16khz_mono_wavs_with_texts() -> None:
    samples = speech.load_samples()
    assert len(samples) >= 3
    for sample in samples:
        assert sample.text.strip()
        with wave.open(str(sample.path), "rb") as wav:
            assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 16000)
            seconds = wav.getnframes() / wav.getframerate()
        assert 1.0 < seconds < 8.0
        assert sample.path.stat().st_size < 300_000
        assert sample.read_bytes()[:4] == b"RIFF"
    names = json.loads(speech.SAMPLES_JSON.read_text())["samples"]
    assert [entry["name"] for entry in names] == [s.name for s in samples]


def test_wav_bytes_round_trip_and_decode() -> None:
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000).astype(np.float32)
    data = speech.wav_bytes(tone)
    assert data[:4] == b"RIFF" and len(data) == 44 + 2 * 16000
    decoded = speech.decode_audio_bytes(data)  # PyAV, as the served model decodes
    assert decoded.shape == (16000,)
    np.testing.assert_allclose(decoded, tone, atol=1e-3)


def test_read_wav_of_a_sample(tmp_path) -> None:
    sample = speech.load_samples()[0]
    samples, rate = speech.read_wav(sample.path)
    assert rate == 16000 and samples.dtype == np.float32
    assert 0.05 < np.abs(samples).max() <= 1.0


def test_concatenate_inserts_gaps() -> None:
    a, b = np.ones(100, np.float32), np.ones(50, np.float32)
    joined = speech.concatenate([a, b], gap_seconds=0.01)  # 160 samples at 16 kHz
    assert joined.shape == (310,)
    assert joined[100:260].tolist() == [0.0] * 160 and joined[260:].tolist() == [1.0] * 50


@pytest.mark.parametrize(
    ("reference", "hypothesis", "expected"),
    [
        ("the cat sat", "the cat sat", 0.0),
        ("The cat sat.", "the CAT, sat", 0.0),  # case and punctuation ignored
        ("the cat sat", "the bat sat", 1 / 3),  # one substitution
        ("the cat sat", "the sat", 1 / 3),  # one deletion
        ("the cat sat", "the black cat sat", 1 / 3),  # one insertion
        ("the cat sat", "", 1.0),
        ("a b", "c d e f", 2.0),  # WER can exceed 1
        ("quick brown fox", "quick round-fark", 2 / 3),  # hyphen splits words
    ],
)
def test_word_error_rate(reference: str, hypothesis: str, expected: float) -> None:
    assert speech.word_error_rate(reference, hypothesis) == pytest.approx(expected)


def test_edit_distance_is_levenshtein() -> None:
    assert speech.edit_distance(list("kitten"), list("sitting")) == 3
    assert speech.edit_distance([], ["a", "b"]) == 2


def test_synthesise_says_how_to_install_espeak_when_missing(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(speech.shutil, "which", lambda name: None)
    with pytest.raises(speech.EspeakMissing, match="apt-get install -y espeak-ng"):
        speech.synthesise("hello", tmp_path / "hello.wav")


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_synthesise_writes_a_16khz_mono_wav(tmp_path) -> None:
    path = speech.synthesise("Hello world; -rf and $(echo no)", tmp_path / "sub" / "hello.wav")
    samples, rate = speech.read_wav(path)
    assert rate == 16000
    assert 0.5 < len(samples) / rate < 6.0
    assert np.abs(samples).max() > 0.05


def test_plot_waveform_marks_each_segment() -> None:
    samples, _ = speech.read_wav(speech.load_samples()[0].path)
    segments = [
        {"start": 0.0, "end": 1.0, "text": " one"},
        {"start": 1.5, "end": 2.5, "text": " two"},
    ]
    ax = speech.plot_waveform(samples, segments, title="t")
    assert [t.get_text() for t in ax.texts] == ["one", "two"]
    assert len(ax.patches) == 2  # one shaded span per segment
    assert ax.get_xlim()[1] == pytest.approx(len(samples) / 16000, rel=1e-3)


def test_synthesise_speaks_mandarin_into_real_audio(tmp_path) -> None:
    """Notebook 06's Mandarin sample: a WAV that decodes, lasts seconds and is not silence."""
    require_system("espeak-ng", "espeak-ng")
    sentence = "我们明天上午十点开会。"
    path = speech.synthesise(
        sentence, tmp_path / "mandarin.wav", voice="cmn-latn-pinyin", speed=120
    )
    samples, rate = speech.read_wav(path)
    assert rate == 16000
    assert 2.0 < len(samples) / rate < 10.0  # ten syllables at 120 words per minute
    assert np.abs(samples).max() > 0.05
    decoded = speech.decode_audio_bytes(path.read_bytes())  # PyAV, as the served model decodes it
    assert len(decoded) == pytest.approx(len(samples), abs=160)
