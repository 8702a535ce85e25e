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
