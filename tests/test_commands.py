"""Commands rendered as a learner types them (helpers.commands)."""

from __future__ import annotations

import shlex

from helpers.commands import format_command


def test_a_short_command_stays_on_one_line_and_is_quoted():
    assert (
        format_command(["trtexec", "--onnx=/a b/model.onnx"]) == "trtexec '--onnx=/a b/model.onnx'"
    )


def test_a_long_command_puts_one_option_per_line_with_its_value():
    command = [
        "docker", "run", "--rm", "--gpus", "all", "-v", "/a:/b",
        "nvcr.io/nvidia/tritonserver:24.10-py3-sdk",
        "perf_analyzer", "-m", "yolo11n_onnx", "-u", "localhost:8001", "--shared-memory=system",
    ]  # fmt: skip
    text = format_command(command)
    assert text.splitlines() == [
        "docker run \\",
        "    --rm \\",
        "    --gpus all \\",
        "    -v /a:/b \\",
        "    nvcr.io/nvidia/tritonserver:24.10-py3-sdk \\",
        "    perf_analyzer \\",
        "    -m yolo11n_onnx \\",
        "    -u localhost:8001 \\",
        "    --shared-memory=system",
    ]
    assert shlex.split(text.replace("\\\n", " ")) == command  # the shell reads back the same list


def test_pwd_stays_for_the_shell_to_expand():
    text = format_command(["docker", "run", "-v", "$PWD/model_repository:/models:ro", "x y"])
    assert text == "docker run -v \"$PWD/model_repository:/models:ro\" 'x y'"
