"""How the forward passes run: autocast dtype, gradient scaling, memory format.

``amp`` off gives plain fp32 (the reference's arithmetic). ``amp`` on uses bf16
autocast where the hardware supports it (CUDA with bf16, or a CPU with AVX512-BF16 /
AMX), fp16 + gradient scaling on older GPUs, and plain fp32 elsewhere (with a
message saying so).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Optional

import torch

from ..compat import grad_scaler


@dataclass
class Precision:
    device_type: str = "cpu"
    dtype: Optional[torch.dtype] = None  # None = fp32, no autocast
    channels_last: bool = True
    note: str = "fp32"

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def make_scaler(self):
        """A gradient scaler for fp16 (bf16 and fp32 need none)."""
        if self.dtype is torch.float16:
            return grad_scaler(self.device_type)
        return None

    def format(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def prepare(self, module: torch.nn.Module) -> torch.nn.Module:
        if self.channels_last:
            module.to(memory_format=torch.channels_last)
        return module


def cpu_supports_bf16() -> bool:
    """True when torch reports native bf16 matrix instructions (AVX512-BF16 or AMX) on this CPU.

    A torch without these probes (e.g. BackdoorBench's 1.11) predates its fast CPU bf16
    kernels: its bf16 convolutions run far slower than fp32 even on such a CPU, so it
    counts as no (``bench_scripts/amp_probe.py`` prints the two times).
    """
    cpu = getattr(torch, "cpu", None)
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(cpu, probe, None)
        try:
            if fn is not None and fn():
                return True
        except Exception:  # private probes: never let them break a run
            pass
    return False


def choose_precision(device: torch.device | str, amp: bool) -> Precision:
    device = torch.device(device)
    if not amp:
        return Precision(device.type, None, channels_last=True, note="fp32 (amp off)")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision("cuda", torch.bfloat16, True, "bf16 autocast (cuda)")
        return Precision("cuda", torch.float16, True, "fp16 autocast + gradient scaling (cuda)")
    if device.type == "cpu":
        if cpu_supports_bf16():
            return Precision("cpu", torch.bfloat16, True, "bf16 autocast (cpu with native bf16)")
        return Precision("cpu", None, True, f"fp32: amp requested but torch {torch.__version__} reports no native bf16 "
                                            f"on this CPU, so autocast is off")
    return Precision(device.type, None, False, f"fp32 (no autocast on {device.type})")


def upcast(t: torch.Tensor) -> torch.Tensor:
    """fp32 for half-precision autocast outputs; other dtypes (fp32, fp64) unchanged."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t
