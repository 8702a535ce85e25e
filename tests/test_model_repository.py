"""The committed model repository is copyable: each folder stands alone (DESIGN.md)."""

from __future__ import annotations

import ast
import re

import pytest

from helpers.paths import MODEL_REPOSITORY

FOLDERS = sorted(p for p in MODEL_REPOSITORY.iterdir() if (p / "config.pbtxt").is_file())


@pytest.mark.parametrize("folder", FOLDERS, ids=[f.name for f in FOLDERS])
def test_each_model_folder_is_named_by_its_config_and_imports_nothing_of_ours(folder):
    config = (folder / "config.pbtxt").read_text()
    assert re.search(rf'^name: "{folder.name}"$', config, re.M), "config name = folder name"
    for script in folder.glob("*/model.py"):
        for node in ast.walk(ast.parse(script.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = (
                    [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
                )
                assert not any((n or "").split(".")[0] in {"helpers", "tests"} for n in names), (
                    script
                )


def test_both_whisper_folders_hold_the_very_same_model_py():
    """faster_whisper_python and _stream ship one model.py, copied so each folder stands alone."""
    plain = (MODEL_REPOSITORY / "faster_whisper_python" / "1" / "model.py").read_bytes()
    stream = (MODEL_REPOSITORY / "faster_whisper_python_stream" / "1" / "model.py").read_bytes()
    assert plain == stream, "edit one model.py, then copy it over the other"
