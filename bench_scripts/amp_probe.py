"""Seconds per forward + backward of a PreAct-ResNet18 on CPU, fp32 vs bf16 autocast.

    python bench_scripts/amp_probe.py [--batch 32] [--width 16] [--steps 3] [--threads 1]

Why the plugin keeps amp off on CPU where torch reports no native bf16
(``core/precision.py``): torch versions without that report (e.g. 1.11) run bf16
convolutions far slower than fp32.
"""

from __future__ import annotations

import argparse
import time

import torch

from sau_plugin.core import cpu_supports_bf16
from sau_plugin.models import create_model


def seconds_per_step(model: torch.nn.Module, x: torch.Tensor, bf16: bool, steps: int) -> float:
    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(x).float().sum()
        loss.backward()

    step()  # warm-up
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model("preactresnet18", 10, width=args.width)
    x = torch.randn(args.batch, 3, 32, 32)
    fp32 = seconds_per_step(model, x, False, args.steps)
    bf16 = seconds_per_step(model, x, True, args.steps)
    print(f"torch {torch.__version__}; torch reports native CPU bf16: {cpu_supports_bf16()}")
    print(f"fp32 {fp32:.3f} s/step, bf16 autocast {bf16:.3f} s/step ({bf16 / fp32:.2f}x fp32)")


if __name__ == "__main__":
    main()
