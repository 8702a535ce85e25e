"""Python stand-ins for Triton's native runtime backends (introduced in notebook 03).

This folder is laid out like a Triton ``--backend-directory``: each sub-folder is one backend
whose ``model.py`` the embedded server uses as a *Python-based backend*. A model whose config
says ``platform: "onnxruntime_onnx"`` runs through ``onnxruntime/model.py``,
``pytorch_libtorch`` through ``pytorch/model.py`` and ``tensorrt_plan`` through
``tensorrt/model.py``. They share the modules beside this file (``runtime_base.py``,
``host_buffers.py``), which ``helpers.server`` copies beside each ``model.py`` together with
the other ``.py`` files of the backend's folder. None of them imports ``helpers``: they run
inside Triton's Python stub process, not in the notebook's.
"""
