"""Re-create the committed speech samples with espeak-ng: ``python -m tools.speech_samples``.

Every entry of ``data/speech/samples.json`` names its text, ``voice`` and ``speed``; each WAV
is spoken again with ``helpers.speech.synthesise``. Other espeak-ng versions sound slightly
different, so the committed files, not regenerated ones, are what the tests score.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from helpers.speech import SPEECH_DIR, EspeakMissing, synthesise


def synthesise_samples(folder: Path = SPEECH_DIR) -> list[Path]:
    """Speak every sample listed in ``folder/samples.json`` into its WAV file."""
    index = json.loads((folder / "samples.json").read_text(encoding="utf-8"))
    return [
        synthesise(
            entry["text"],
            folder / entry["file"],
            voice=entry.get("voice", "en-us"),
            speed=int(entry.get("speed", 150)),
        )
        for entry in index["samples"]
    ]


if __name__ == "__main__":
    try:
        for path in synthesise_samples():
            print(path)
    except EspeakMissing as error:
        sys.exit(str(error))
