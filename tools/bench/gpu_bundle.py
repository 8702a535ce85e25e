"""Pack what ``python -m tools.bench gpu`` needs on a GPU machine that has no network.

The GPU machines the course was measured on (docs/results) run Ubuntu 24.04 with Python
3.12, PyTorch and onnxruntime, and cannot reach PyPI. This writes ``--out`` (default
``.gpu/``, ignored by git), small enough to copy there:

* ``tritonserver.tar.xz``: the embedded server from this venv's nvidia-pytriton wheel (the
  binary, its bundled libraries, the Python backend and the Python 3.12 stub) under a
  ``pytriton/`` package, which is all ``helpers.server`` looks for (about 27 MB);
* ``wheels/``: tritonclient (with grpcio and protobuf), the perf_analyzer wheel (it needs
  glibc >= 2.38) and ultralytics, for Python 3.12, downloaded from PyPI;
* ``numpy.tar.xz``: numpy 1.26 without its tests. The embedded server's Python stub is
  built for numpy 1.x (pybind11 2.11) and the GPU image has numpy 2.5: there every tensor
  the stub handed over had item size 0, so inputs read as their first value repeated and
  outputs came back empty (found on an H200, 2026-11-29). The stub also ignores PYTHONPATH:
  it reads the packages of the ``python3`` first on PATH;
* ``setup.sh``: unpacks the server and the wheels into ``/tmp/site``, and makes ``/tmp/venv``:
  a venv with numpy 1.26 first, then the image's own packages (torch).

``--course`` packs what ``python -m tools.run_course`` needs too (``COURSE``: nbclient,
nbconvert, ipykernel and their needs, onnxslim, netron, tritonclient's HTTP extra through
geventhttpclient 2.6.1, FastAPI for notebook 07), resolved by pip for Python 3.12 less what the
image has (``IMAGE_HAS``), with the wheels above, installed and stripped into one
``site.tar.xz`` (about 22 MB) so that server, numpy and packages fit the 64 MiB a call
carries. It cannot carry notebook 06's faster-whisper (ctranslate2 43 MB and PyAV 36 MB
wheels, a 75 MB model) nor notebook 10's envoy binary (107 MB, 24 MB as xz) beside them:
on 2026-12-06 envoy went in a second call to the same, still warm machine
(docs/results/gpu-course-2026-12-06.md).

On the GPU machine::

    sh .gpu/setup.sh && export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/venv/bin:/tmp/site/bin:$PATH
    python3 -m tools.bench gpu
    export JUPYTER_PATH=/tmp/site/share/jupyter  # --course: nbconvert's templates
    python3 -m tools.run_course 00 01 02 03 04
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from helpers.paths import REPO_ROOT
from helpers.server import find_embedded_triton

#: numpy for the Python stub (nvidia-pytriton pins numpy<2 for it).
STUB_NUMPY = "numpy==1.26.4"
#: The GPU machine's Python.
PYTHON = "3.12"
#: Wheels the GPU machine lacks (its image has torch, numpy, pandas, cuda-bindings). tritonclient
#: is the course venv's: 2.51's CUDA shared-memory module imports ``cuda.cudart``, which the
#: image's cuda-bindings 13 no longer has (2.73 uses ``cuda.bindings``), and its wheel carries two
#: 20 MB perf binaries the perf-analyzer wheel replaces. 2.73's gRPC code is generated for
#: grpcio >= 1.81 and protobuf 6, so those travel too (the image's may be older).
WHEELS = [
    "tritonclient==2.73.0",
    "grpcio==1.85.4",
    "protobuf==6.33.6",
    "perf-analyzer==2.60.0",
    "ultralytics==8.4.190",
    "ultralytics-thop==2.2.3",
    "python-rapidjson==1.25",
]
#: What the course runner and notebooks 00-05 and 07-09 need beyond ``WHEELS`` (their
#: dependencies are resolved by pip), as the course venv pins them.
COURSE = [
    "nbclient==0.11.0",
    "nbconvert==7.17.2",
    "nbformat==5.11.1",
    "ipykernel==7.4.0",
    "jupyter_client==8.10.0",
    "tqdm==4.70.1",
    "onnxslim==0.1.98",
    "geventhttpclient==2.6.1",
    "fastapi==0.165.0",
    "uvicorn==0.55.0",
    "httpx==0.29.0",
    "psutil==7.2.2",
    "prometheus-client==0.26.0",
    "pyyaml==6.0.4",
    "netron==9.3.3",
]
#: Resolved for ``COURSE`` but already in the GPU image (torch's, pandas' and onnxruntime's
#: needs): left out, so the image's builds are used. protobuf travels in ``WHEELS``.
IMAGE_HAS = {
    "numpy", "onnx", "protobuf", "sympy", "mpmath", "ml-dtypes", "python-dateutil", "tzdata",
    "typing-extensions", "jinja2", "markupsafe", "packaging", "certifi", "idna",
}  # fmt: skip
PLATFORMS = [
    "manylinux_2_39_x86_64",
    "manylinux_2_38_x86_64",
    "manylinux_2_35_x86_64",
    "manylinux_2_28_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
]
SETUP = """#!/bin/sh
# Unpack the embedded tritonserver and the wheels beside this file into /tmp/site, and make
# /tmp/venv: numpy 1.x first (the Python stub is built for it and ignores PYTHONPATH), then
# this machine's own packages. Written by `python -m tools.bench.gpu_bundle`; then:
#   export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/venv/bin:/tmp/site/bin:$PATH
set -e
here=$(dirname "$0")
mkdir -p /tmp/site
tar -C /tmp/site -xJf "$here/tritonserver.tar.xz"
if [ -f "$here/site.tar.xz" ]; then  # --course: the wheels, installed and packed
    tar -C /tmp/site -xJf "$here/site.tar.xz"
else
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \\
        --target /tmp/site "$here"/wheels/*.whl
fi
base=$(python3 -c 'import site; print(site.getsitepackages()[0])')
python3 -m venv --without-pip /tmp/venv
packages=$(/tmp/venv/bin/python3 -c 'import site; print(site.getsitepackages()[0])')
echo "import site; site.addsitedir('$base')" > "$packages/base_environment.pth"
tar -C "$packages" -xJf "$here/numpy.tar.xz"
"""


def pack_server(target: Path, python: str = PYTHON) -> Path:
    """Write the embedded tritonserver (with the ``python`` stub only) to ``target``."""
    embedded = find_embedded_triton()
    package = embedded.binary.parents[2]  # .../pytriton
    stub = package / "tritonserver" / "python_backend_stubs" / python
    if not stub.is_dir():
        raise FileNotFoundError(f"the nvidia-pytriton wheel has no Python {python} stub: {stub}")
    with tarfile.open(target, "w:xz") as archive:
        init = target.with_name("pytriton_init.py")
        init.write_text('"""Only the tritonserver of nvidia-pytriton, for helpers.server."""\n')
        archive.add(init, "pytriton/__init__.py")
        init.unlink()
        archive.add(embedded.binary, "pytriton/tritonserver/bin/tritonserver")
        archive.add(
            embedded.python_backend_dir,
            "pytriton/tritonserver/backends/python",
            filter=lambda info: None if "__pycache__" in info.name else info,
        )
        archive.add(stub, f"pytriton/tritonserver/python_backend_stubs/{python}")
        caches = package / "tritonserver" / "caches"  # the response cache (notebooks 08, 09)
        if caches.is_dir():
            archive.add(caches, "pytriton/tritonserver/caches")
        for library in sorted(embedded.library_dir.iterdir()):
            if library.name.startswith("libpython"):  # the GPU machine has its own libpython
                continue
            archive.add(library, f"nvidia_pytriton.libs/{library.name}")
    return target


def download_wheels(folder: Path, names: list[str] = WHEELS, python: str = PYTHON) -> list[Path]:
    """Download the wheels ``names`` for ``python`` on x86-64 Linux into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    command += ["--python-version", python, "--implementation", "cp", "-d", str(folder)]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    subprocess.run([*command, *names], check=True)
    return sorted(folder.glob("*.whl"))


def resolve(names: list[str], python: str = PYTHON) -> list[str]:
    """``names`` and everything they need, as ``name==version`` for ``python``, less ``IMAGE_HAS``."""
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.json"
        command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "-q"]
        command += ["--only-binary=:all:", "--python-version", python, "--implementation", "cp"]
        command += ["--target", str(Path(scratch) / "t"), "--report", str(report)]
        for platform in PLATFORMS:
            command += ["--platform", platform]
        subprocess.run([*command, *names], check=True)
        found = [item["metadata"] for item in json.loads(report.read_text())["install"]]
    keep = [m for m in found if m["name"].lower().replace("_", "-") not in IMAGE_HAS]
    return sorted(f"{m['name']}=={m['version']}" for m in keep)


def pack_site(target: Path, wheels: list[Path], python: str = PYTHON) -> Path:
    """Install ``wheels`` for ``python`` into one tar.xz to unpack as ``/tmp/site``.

    Shared libraries and binaries are stripped of symbols and jedi's type stubs (completion
    only) are left out: the tree shrinks from 145 to 100 MB, about 22 MB packed.
    """
    with tempfile.TemporaryDirectory() as scratch:
        site = Path(scratch) / "site"
        command = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps"]
        command += ["--no-compile", "--only-binary=:all:", "--python-version", python]
        command += ["--implementation", "cp", "--target", str(site)]
        for platform in PLATFORMS:
            command += ["--platform", platform]
        subprocess.run([*command, *map(str, wheels)], check=True)
        shutil.rmtree(site / "jedi" / "third_party" / "typeshed", ignore_errors=True)
        binaries = [*site.rglob("*.so"), *site.rglob("*.so.*"), *site.glob("*/bin/*")]
        for binary in binaries:
            if binary.is_file() and not binary.is_symlink():
                subprocess.run(["strip", "--strip-unneeded", str(binary)], capture_output=True)
        with tarfile.open(target, "w:xz") as archive:
            for item in sorted(site.iterdir()):
                archive.add(item, item.name)
    return target


def pack_numpy(target: Path, python: str = PYTHON) -> Path:
    """Write ``STUB_NUMPY`` for ``python``, without its tests, as a tar.xz to unpack in place."""
    with tempfile.TemporaryDirectory() as scratch:
        wheel = download_wheels(Path(scratch) / "wheel", [STUB_NUMPY], python)[0]
        unpacked = Path(scratch) / "unpacked"
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(unpacked)
        with tarfile.open(target, "w:xz") as archive:
            for item in sorted(unpacked.iterdir()):
                archive.add(
                    item,
                    item.name,
                    filter=lambda info: None if "tests" in Path(info.name).parts else info,
                )
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.gpu_bundle")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / ".gpu")
    parser.add_argument(
        "--course", action="store_true",
        help="also what python -m tools.run_course needs, all packed as site.tar.xz",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.out.exists():
        shutil.rmtree(args.out / "wheels", ignore_errors=True)
        (args.out / "site.tar.xz").unlink(missing_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    print("packing the embedded tritonserver (xz, about 2 minutes on 2 cores)...", flush=True)
    server = pack_server(args.out / "tritonserver.tar.xz")
    numpy = pack_numpy(args.out / "numpy.tar.xz")
    if args.course:
        with tempfile.TemporaryDirectory() as scratch:
            wheels = download_wheels(Path(scratch), WHEELS + resolve(COURSE))
            packages = [pack_site(args.out / "site.tar.xz", wheels)]
    else:
        wheels = packages = download_wheels(args.out / "wheels")
    (args.out / "setup.sh").write_text(SETUP)
    total = sum(path.stat().st_size for path in [server, numpy, *packages])
    print(
        f"wrote {args.out}: {server.name}, {numpy.name} and {len(wheels)} wheels"
        f"{' (in site.tar.xz)' if args.course else ''}, {total / 2**20:.1f} MiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
