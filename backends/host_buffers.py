"""Reusable host buffers for the Python stand-in backends (no Triton, no torch needed here).

A dynamic batch of 32 YOLO11n images is 39 MB in and, with the raw output, 45 MB out: above
glibc's 32 MiB mmap threshold every fresh ``np.concatenate`` or ``.cpu()`` of that size gets
fresh pages from the kernel (measured on an H200 host: 36 ms for the batch-32 output, against
0.84 ms into a reused pinned buffer). So each model instance keeps its buffers and reuses
them. A buffer is handed out again only when nothing still refers to it: responses hold
numpy views of it until Triton's stub has copied them into its shared memory, and every
view of a buffer keeps a reference to it (numpy's ``.base``), so the reference count says
whether a response still holds one.

This file runs inside Triton's Python stub beside ``runtime_base.py``; it must not import
``helpers``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence

import numpy as np

#: Allocates ``nbytes`` of host memory as a 1-D uint8 array (pageable by default).
Allocator = Callable[[int], np.ndarray]


def pageable(nbytes: int) -> np.ndarray:
    """Plain host memory: a 1-D uint8 numpy array of ``nbytes``."""
    return np.empty(nbytes, dtype=np.uint8)


class HostBufferPool:
    """Per-instance host buffers, reused only once no view handed out from them is alive."""

    def __init__(self, allocate: Allocator = pageable, per_key: int = 3) -> None:
        self.allocate = allocate
        self.per_key = per_key
        self.buffers: dict[str, list[np.ndarray]] = {}
        self.allocations = 0  # how many pooled buffers were ever allocated (tests, logs)
        # The count of a buffer that only the pool holds, read the same way as in_use reads it.
        self._free_references = _references([np.empty(1, dtype=np.uint8)], 0)

    def reserve(self, key: str, nbytes: int) -> None:
        """Allocate one buffer of at least ``nbytes`` for ``key`` now (at model load)."""
        if all(buffer.nbytes < nbytes for buffer in self.buffers.get(key, [])):
            self._add(key, nbytes)

    def take(self, key: str, shape: Sequence[int], dtype: np.dtype | type) -> np.ndarray:
        """A writable array of ``shape`` and ``dtype`` in a buffer no live view refers to."""
        dtype = np.dtype(dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        pool = self.buffers.setdefault(key, [])
        idle = [i for i in range(len(pool)) if not self.in_use(key, i)]
        fitting = [i for i in idle if pool[i].nbytes >= nbytes]
        if fitting:
            index = min(fitting, key=lambda i: pool[i].nbytes)
        else:
            if idle:  # grow: a batch larger than any before replaces the largest idle buffer
                del pool[max(idle, key=lambda i: pool[i].nbytes)]
            index = self._add(key, nbytes)
        if index < 0:  # pool full of buffers still held by responses: a one-off buffer
            return self.allocate(nbytes)[:nbytes].view(dtype).reshape(tuple(shape))
        return pool[index][:nbytes].view(dtype).reshape(tuple(shape))

    def in_use(self, key: str, index: int) -> bool:
        """Whether anything besides the pool refers to buffer ``index`` of ``key`` (a view)."""
        return _references(self.buffers[key], index) > self._free_references

    def _add(self, key: str, nbytes: int) -> int:
        """Allocate a pooled buffer; its index, or -1 when the pool for ``key`` is full."""
        pool = self.buffers.setdefault(key, [])
        if len(pool) >= self.per_key:
            return -1
        pool.append(self.allocate(max(nbytes, 1)))
        self.allocations += 1
        return len(pool) - 1


def _references(pool: list[np.ndarray], index: int) -> int:
    """CPython's reference count of ``pool[index]`` as seen from here."""
    return sys.getrefcount(pool[index])


def gather(
    pool: HostBufferPool,
    key: str,
    parts: Sequence[np.ndarray],
    copy: Callable[[np.ndarray, np.ndarray], None] = np.copyto,
) -> np.ndarray:
    """Stack arrays along axis 0 into a reused buffer; a single array is returned as is."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    if first.dtype.hasobject:  # strings (TYPE_STRING) are Python objects: no raw buffer
        return np.concatenate(parts)
    rows = sum(part.shape[0] for part in parts)
    out = pool.take(key, (rows, *first.shape[1:]), first.dtype)
    start = 0
    for part in parts:
        copy(out[start : start + part.shape[0]], part)
        start += part.shape[0]
    return out


def split_rows(array: np.ndarray, sizes: Sequence[int]) -> list[np.ndarray]:
    """Consecutive, non-overlapping row slices of ``array`` with the given sizes (views)."""
    offsets = np.cumsum([0, *sizes])
    return [array[start:stop] for start, stop in zip(offsets[:-1], offsets[1:])]


if sys.implementation.name != "cpython":  # pragma: no cover - the stub is CPython
    raise ImportError("host_buffers relies on CPython reference counts")
