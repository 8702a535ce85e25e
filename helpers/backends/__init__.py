"""Python stand-ins for Triton's native runtime backends (introduced in notebook 03).

Each sub-folder holds a ``model.py`` that the embedded server uses as a *Python-based
backend*: a model whose config says ``platform: "onnxruntime_onnx"`` runs through
``onnxruntime/model.py``, ``pytorch_libtorch`` through ``pytorch/model.py`` and
``tensorrt_plan`` through ``tensorrt/model.py``. They share ``runtime_base.py`` and
``host_buffers.py``, which the server manager copies beside each ``model.py`` together with
the other ``.py`` files of the backend's folder. None of them imports ``helpers``:
they run inside Triton's Python stub process.
"""

from pathlib import Path

#: Folder holding one sub-folder per stand-in backend plus the shared runtime_base.py.
BACKENDS_DIR: Path = Path(__file__).resolve().parent
#: Backend name -> the model file name its native counterpart looks for.
STAND_IN_BACKENDS: dict[str, str] = {
    "onnxruntime": "model.onnx",
    "pytorch": "model.pt",
    "tensorrt": "model.plan",
}
#: Modules every stand-in imports, copied beside each ``model.py``.
SHARED_MODULES: tuple[str, ...] = ("runtime_base.py", "host_buffers.py")
