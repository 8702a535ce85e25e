"""The course runner (``make run``) on small notebooks made for it."""

from __future__ import annotations

import nbformat
import pytest

from tools.run_course import NotebookFailed, execute, main


def _notebook(folder, name, cells):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    for source, tags in cells:
        cell = nbformat.v4.new_code_cell(source)
        if tags:
            cell.metadata["tags"] = tags
        nb.cells.append(cell)
    path = folder / name
    nbformat.write(nb, path)
    return path


def _text(cell):
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def test_an_intended_error_is_shown_and_later_cells_run(tmp_path):
    source = _notebook(
        tmp_path,
        "00_intended.ipynb",
        [
            ("N = 1", ["parameters"]),
            ("raise ValueError('shown on purpose')", ["raises-exception"]),
            ("print('after', N)", []),
        ],
    )
    out = tmp_path / "out"
    out.mkdir()
    executed = nbformat.read(execute(source, out, {"N": 7}), as_version=4)
    error = [o for o in executed.cells[2].outputs if o.output_type == "error"]
    assert error and error[0].ename == "ValueError"
    assert _text(executed.cells[3]) == "after 7\n"  # cell 1 is papermill's injected parameters
    html = (out / "00_intended.html").read_text()
    assert "shown on purpose" in html and "encountered an exception" not in html


def test_an_untagged_error_stops_the_run_and_names_the_cell(tmp_path, capsys):
    _notebook(tmp_path, "00_fine.ipynb", [("x = 1", [])])
    _notebook(
        tmp_path,
        "01_broken.ipynb",
        [("x = 1", []), ("1 / 0", []), ("print('never')", [])],
    )
    _notebook(tmp_path, "02_never_reached.ipynb", [("print('no')", [])])
    out = tmp_path / "out"
    assert main(["--notebooks", str(tmp_path), "--out", str(out)]) == 1
    printed = capsys.readouterr()
    assert "[2/3] 01_broken.ipynb ... FAILED" in printed.out
    assert "01_broken.ipynb: cell 1 (execution count 2) raised ZeroDivisionError" in printed.err
    executed = nbformat.read(out / "01_broken.ipynb", as_version=4)
    assert executed.cells[2].execution_count is None  # nothing ran after the error
    assert not (out / "02_never_reached.ipynb").exists()


def test_a_tagged_cell_that_raises_nothing_fails(tmp_path):
    source = _notebook(
        tmp_path,
        "00_stale.ipynb",
        [("x = 1", ["raises-exception"]), ("print('ran')", [])],
    )
    with pytest.raises(NotebookFailed) as failure:
        execute(source, tmp_path, {})
    assert failure.value.cell_index == 0
    assert "tagged 'raises-exception' but raised nothing" in str(failure.value)
    executed = nbformat.read(tmp_path / "00_stale.ipynb", as_version=4)
    assert _text(executed.cells[1]) == "ran\n"  # the run went to the end before judging


def test_every_notebook_passing_exits_zero(tmp_path, capsys):
    _notebook(tmp_path, "00_a.ipynb", [("print(1)", [])])
    _notebook(tmp_path, "01_b.ipynb", [("raise KeyError('k')", ["raises-exception"])])
    out = tmp_path / "out"
    assert main(["--notebooks", str(tmp_path), "--out", str(out)]) == 0
    assert "all 2 notebooks ran" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir() if p.suffix != ".log") == [
        "00_a.html", "00_a.ipynb", "01_b.html", "01_b.ipynb",
    ]  # fmt: skip


def test_a_cell_past_its_timeout_fails_and_is_named(tmp_path):
    source = _notebook(
        tmp_path,
        "00_slow.ipynb",
        [("x = 1", []), ("import time; time.sleep(30)", ["raises-exception"])],
    )
    with pytest.raises(NotebookFailed) as failure:
        execute(source, tmp_path, {}, cell_timeout=2)
    assert failure.value.cell_index == 1
    assert "CellTimeoutError" in str(failure.value)


def _make_run_command(*variables: str) -> list[str]:
    """The run_course command line that ``make run VARIABLES...`` would execute (make -n)."""
    import os
    import shlex
    import shutil
    import subprocess

    from helpers.paths import REPO_ROOT

    if shutil.which("make") is None:
        pytest.skip("GNU make is not installed")
    env = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL"}}
    printed = subprocess.run(
        ["make", "--no-print-directory", "-n", "run", *variables],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    lines = [line for line in printed.splitlines() if "tools.run_course" in line]
    assert len(lines) == 1, printed
    return shlex.split(lines[0])


def test_make_run_passes_its_command_line_variables_by_name():
    command = _make_run_command("NOTEBOOKS=03 07", "MEASURE_SECONDS=2", "PYTHON=python3")
    assert command[:3] == [".venv/bin/python", "-m", "tools.run_course"]
    assert command[3] == "--from-make"
    # the Makefile's own PYTHON is make's, not a notebook's
    assert sorted(command[4].split()) == ["MEASURE_SECONDS", "NOTEBOOKS"]
    assert _make_run_command()[3:] == ["--from-make", ""]


def test_make_variables_read_values_from_the_environment():
    from tools.run_course import make_variables

    environ = {
        "NOTEBOOKS": "03 07,08",
        "MEASURE_SECONDS": "2",
        "TRITON_URL": "127.0.0.1:8000",
        "CONCURRENCY_LEVELS": "[1, 2]",
        "HOME": "/root",  # in the environment but not given to make: not a parameter
    }
    prefixes, parameters = make_variables(
        "NOTEBOOKS MEASURE_SECONDS TRITON_URL CONCURRENCY_LEVELS", environ
    )
    assert prefixes == ["03", "07", "08"]
    assert parameters == {
        "MEASURE_SECONDS": 2,
        "TRITON_URL": "127.0.0.1:8000",
        "CONCURRENCY_LEVELS": [1, 2],
    }
    assert make_variables("", environ) == ([], {})


@pytest.mark.parametrize(
    ("names", "message"),
    [("measure_seconds", "'measure_seconds' is not a notebook parameter"),
     ("MISSING", "MISSING was named but make did not export its value")],
)  # fmt: skip
def test_make_variables_refuse_bad_names(names, message):
    from tools.run_course import make_variables

    with pytest.raises(SystemExit, match=message):
        make_variables(names, {"measure_seconds": "2"})


def test_make_run_variables_select_and_override(tmp_path, capsys, monkeypatch):
    _notebook(tmp_path, "00_a.ipynb", [("N = 1", ["parameters"]), ("print('a', N)", [])])
    _notebook(tmp_path, "01_b.ipynb", [("print('b')", [])])
    _notebook(tmp_path, "02_c.ipynb", [("N = 1", ["parameters"]), ("print('c', N)", [])])
    monkeypatch.setenv("NOTEBOOKS", "00 02")
    monkeypatch.setenv("N", "7")
    out = tmp_path / "out"
    assert (
        main(["--notebooks", str(tmp_path), "--out", str(out), "--from-make", "NOTEBOOKS N"]) == 0
    )
    assert "all 2 notebooks ran" in capsys.readouterr().out
    for name, letter in (("00_a", "a"), ("02_c", "c")):
        executed = nbformat.read(out / f"{name}.ipynb", as_version=4)
        assert _text(executed.cells[2]) == f"{letter} 7\n"
    assert not (out / "01_b.ipynb").exists()


def test_a_parameter_no_notebook_takes_is_refused(tmp_path):
    _notebook(tmp_path, "00_a.ipynb", [("MEASURE_SECONDS = 6", ["parameters"])])
    with pytest.raises(
        SystemExit, match="takes the parameter.s. MEASURE_SECOND; their parameters: MEASURE_SECONDS"
    ):
        main(["--notebooks", str(tmp_path), "--out", str(tmp_path / "o"), "-p", "MEASURE_SECOND=2"])
