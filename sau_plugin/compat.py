"""The torch APIs that differ between the oldest supported stack and today's.

The package runs from BackdoorBench's pinned environment (Python 3.8, torch 1.11, NumPy
1.x) to today's torch and NumPy 2. Everything that appeared after torch 1.11 is looked
up here when it is used, never inferred from a version string:

* ``torch.load(weights_only=...)`` (torch 1.13) and ``torch.serialization.safe_globals``
  (2.5) decide how ``sau_plugin.safeload`` loads untrusted pickles;
* ``torch.amp.GradScaler`` (2.3; before it only ``torch.cuda.amp.GradScaler``);
* ``torch.compile`` (2.0).

``torch.autocast(device_type, dtype=...)`` with bf16 on CPU and CUDA exists from torch
1.10 on, so it needs no switch.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

import torch

from .errors import ConfigError


@functools.lru_cache(maxsize=None)
def _load_parameters() -> frozenset:
    return frozenset(inspect.signature(torch.load).parameters)


def load_has_weights_only() -> bool:
    """True when ``torch.load`` takes ``weights_only`` (torch >= 1.13)."""
    return "weights_only" in _load_parameters()


def has_safe_globals() -> bool:
    """True when torch's own restricted unpickler can be given extra allowed globals
    (``torch.serialization.safe_globals``, torch >= 2.5)."""
    return load_has_weights_only() and callable(getattr(torch.serialization, "safe_globals", None))


def grad_scaler(device_type: str) -> Any:
    """A gradient scaler for fp16 autocast on ``device_type``."""
    amp = getattr(torch, "amp", None)
    scaler = getattr(amp, "GradScaler", None)
    if scaler is not None:
        return scaler(device_type)
    if device_type == "cuda":
        return torch.cuda.amp.GradScaler()
    raise ConfigError(f"fp16 gradient scaling on {device_type!r} needs torch.amp.GradScaler, which torch "
                      f"{torch.__version__} lacks; set amp: False")


def has_compile() -> bool:
    return callable(getattr(torch, "compile", None))


def require_compile() -> None:
    if not has_compile():
        raise ConfigError(f"--compile needs torch.compile (torch >= 2.0); torch {torch.__version__} lacks it; "
                          f"run without --compile")


def compiled(module: torch.nn.Module) -> Callable:
    require_compile()
    return torch.compile(module)


__all__ = ["load_has_weights_only", "has_safe_globals", "grad_scaler",
           "has_compile", "require_compile", "compiled"]
