"""Process-wide speed settings, applied only when asked: glibc heap reuse and cudnn.benchmark.

The core (``sau_plugin.core``) never calls this: building an ``Unlearner`` leaves the
process as it was. The run layer (``sau-plugin defend``, ``bench_scripts/speed.py``) calls
:func:`configure` once and logs the notes it returns; Python API users who want the same
speed call it themselves (``sau_plugin.runtime.configure(device)``).

Heap reuse: PyTorch's CPU allocator asks glibc for every tensor. A PreAct-ResNet18
activation of a batch of 256 at 32x32 is 64 MB, above glibc's largest mmap threshold
(32 MB), so each one is mmapped, zero-filled by the kernel page by page, and unmapped
again when freed: on two cores that costs about a quarter of a PGD step (see
bench_scripts/speed.py). With mmap off for malloc and a high trim threshold, freed blocks
stay in the heap and the next batch reuses them. Results do not change; peak RSS rises
slightly (retained heap). A no-op where libc is not glibc; it cannot be undone.

cudnn.benchmark: fixed input shapes, so cuDNN may pick the fastest kernels (GPU runs
are not bitwise reproducible anyway).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from typing import NamedTuple, Optional

import torch

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
_TRIM_BYTES = 2**31 - 1  # mallopt takes an int: about 2 GiB of free heap top kept

_state: Optional[str] = None


class RuntimeNotes(NamedTuple):
    allocator: str  # e.g. "glibc heap reuse (M_MMAP_MAX=0, M_TRIM_THRESHOLD=2 GiB)"
    cudnn: str  # "cudnn.benchmark on" / "off"; "" off CUDA

    def __str__(self) -> str:
        return "; ".join(n for n in self if n)


def configure(device: torch.device, *, cpu_heap_reuse: bool = True, cudnn_benchmark: bool = True) -> RuntimeNotes:
    """Apply the speed settings for ``device`` to this process; returns what it now runs with."""
    device = torch.device(device)
    if device.type == "cpu" and cpu_heap_reuse:
        reuse_heap_memory()
    if device.type == "cuda" and cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    return describe(device)


def describe(device: torch.device) -> RuntimeNotes:
    """The settings this process runs with on ``device``, without changing them."""
    device = torch.device(device)
    if device.type == "cuda":
        on = torch.backends.cudnn.benchmark
        return RuntimeNotes("cuda caching allocator", f"cudnn.benchmark {'on' if on else 'off'}")
    if device.type == "cpu":
        return RuntimeNotes(heap_reuse_state(), "")
    return RuntimeNotes(f"{device.type} default allocator", "")


def reuse_heap_memory() -> str:
    """Apply the glibc settings once per process; returns a line saying what was done."""
    global _state
    if _state is None:
        _state = _apply()
    return _state


def heap_reuse_state() -> str:
    """What this process runs with, without changing it."""
    return _state or "default allocator"


def _apply() -> str:
    if not sys.platform.startswith("linux"):
        return f"default allocator (heap reuse is for glibc; platform {sys.platform})"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return "default allocator (libc has no mallopt: not glibc)"
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    if mallopt(M_MMAP_MAX, 0) != 1 or mallopt(M_TRIM_THRESHOLD, _TRIM_BYTES) != 1:
        return "default allocator (glibc refused mallopt)"
    return "glibc heap reuse (M_MMAP_MAX=0, M_TRIM_THRESHOLD=2 GiB)"
