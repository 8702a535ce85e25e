"""Read, validate and render Triton ``config.pbtxt`` files (introduced in notebook 03).

Uses the ``ModelConfig`` protobuf that ships with tritonclient, so a config is checked by
the same schema Triton parses it with, and rendered in protobuf text format, never by
string templates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

ModelConfig = model_config_pb2.ModelConfig


class ConfigError(ValueError):
    """A config.pbtxt that Triton would refuse; the message names the file, line and column."""


def parse_config(text: str, source: str = "config.pbtxt") -> ModelConfig:
    """Parse protobuf text format into a ``ModelConfig``; raise ConfigError naming the line."""
    try:
        return text_format.Parse(text, ModelConfig())
    except text_format.ParseError as error:
        raise ConfigError(f"{source}: {error}") from error


def read_config(path: str | Path) -> ModelConfig:
    """Read ``<model>/config.pbtxt`` (or a model folder) into a ``ModelConfig``."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.pbtxt"
    if not path.exists():
        raise FileNotFoundError(f"no config.pbtxt at {path}")
    return parse_config(path.read_text(), source=str(path))


def config_to_dict(config: ModelConfig) -> dict[str, Any]:
    """The config as a dict with Triton's field names (as the HTTP API returns it)."""
    return json_format.MessageToDict(config, preserving_proto_field_name=True)


def config_from_dict(values: dict[str, Any]) -> ModelConfig:
    """Build a ``ModelConfig`` from a dict; unknown fields raise ConfigError."""
    try:
        return json_format.ParseDict(values, ModelConfig())
    except json_format.ParseError as error:
        raise ConfigError(str(error)) from error


def render_config(config: ModelConfig | dict[str, Any]) -> str:
    """Render a config in the protobuf text format config.pbtxt uses."""
    if isinstance(config, dict):
        config = config_from_dict(config)
    return text_format.MessageToString(config)


def config_variant(
    model: str | Path,
    *,
    instances: int | None = None,
    kind: str | None = None,
    dynamic_batching: bool | None = None,
    max_queue_delay_us: int | None = None,
    preferred_batch_sizes: list[int] | None = None,
    max_batch_size: int | None = None,
    parameters: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A model's config.pbtxt with some fields changed, ready for ``TritonServer.load_model``.

    ``model`` is a model folder (or a name under ``model_repository/``). The file on disk is
    not touched: the variant is sent with the load request, as Triton's repository API allows.
    """
    from helpers.paths import MODEL_REPOSITORY

    folder = Path(model)
    if not folder.is_dir():
        folder = MODEL_REPOSITORY / str(model)
    values = config_to_dict(read_config(folder))
    if instances is not None or kind is not None:
        group = (values.get("instance_group") or [{}])[0]
        if instances is not None:
            group["count"] = instances
        if kind is not None:
            group["kind"] = kind
        values["instance_group"] = [group]
    if dynamic_batching is False:
        values.pop("dynamic_batching", None)
    elif dynamic_batching or max_queue_delay_us is not None or preferred_batch_sizes:
        batching = values.setdefault("dynamic_batching", {})
        if max_queue_delay_us is not None:
            batching["max_queue_delay_microseconds"] = max_queue_delay_us
        if preferred_batch_sizes:
            batching["preferred_batch_size"] = preferred_batch_sizes
    if max_batch_size is not None:
        values["max_batch_size"] = max_batch_size
    if parameters:
        values.setdefault("parameters", {}).update(
            {key: {"string_value": str(value)} for key, value in parameters.items()}
        )
    config_from_dict(values)  # validate against the schema before Triton sees it
    return values
