"""runtime.configure applies the process-wide speed settings; the core never does.

cpu_heap_reuse: large freed CPU blocks stay in the heap, so re-allocating an activation
costs no page faults. Each case runs in a fresh process: the setting is process-wide and
cannot be undone.
"""

from __future__ import annotations

import ctypes.util
import json
import subprocess
import sys

import pytest
import torch

from sau_plugin import runtime

PROBE = r"""
import copy, json, resource, sys, torch
from sau_plugin import SAUConfig, Unlearner, runtime
mode = sys.argv[1]
model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2))
model(torch.zeros(1, 3, 8, 8))
cudnn_before = torch.backends.cudnn.benchmark
if mode == "unlearner":  # the core alone, asked for heap reuse through its config: must not apply it
    u = Unlearner(model, copy.deepcopy(model), SAUConfig(device="cpu", amp=False, cpu_heap_reuse=True))
    u.fit(torch.randn(8, 3, 8, 8), torch.randint(0, 2, (8,)), epochs=1)
    note = runtime.heap_reuse_state()
else:
    note = runtime.configure(torch.device("cpu"), cpu_heap_reuse=mode == "on").allocator
x = torch.ones(64, 2**20 // 4)  # 64 MB, above glibc's largest mmap threshold
for _ in range(3):
    (x * 2).sum()  # warm-up
per_block = []
for _ in range(10):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    (x * 2).sum()  # a fresh 64 MB result, freed at once
    per_block.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
faults = sorted(per_block)[len(per_block) // 2]  # the median block: glibc now and then places one anew
print(json.dumps({"note": note, "faults": faults, "per_block": per_block,
                  "cudnn_changed": torch.backends.cudnn.benchmark != cudnn_before}))
"""

glibc = pytest.mark.skipif(not sys.platform.startswith("linux") or "libc.so.6" not in str(ctypes.util.find_library("c")),
                           reason="heap reuse is a glibc setting")


def _probe(setting: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, setting], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@glibc
def test_heap_reuse_removes_the_page_faults_of_reallocating_activations():
    on, off = _probe("on"), _probe("off")
    assert on["note"].startswith("glibc heap reuse") and off["note"] == "default allocator"
    assert off["faults"] >= 16384 * 0.9, off  # 64 MB in 4 KiB pages, faulted in anew every time
    assert on["faults"] <= 16384 * 0.1, on  # the typical block is reused from the heap


def test_an_unlearner_leaves_the_allocator_and_cudnn_alone():
    got = _probe("unlearner")  # a fresh process: nothing configured before
    assert got["note"] == "default allocator" and not got["cudnn_changed"], got
    if sys.platform.startswith("linux") and "libc.so.6" in str(ctypes.util.find_library("c")):
        assert got["faults"] >= 16384 * 0.9, got  # the glibc default: every block faulted in anew


def test_describe_changes_nothing():
    before = torch.backends.cudnn.benchmark
    notes = runtime.describe(torch.device("cuda"))
    assert notes.allocator == "cuda caching allocator" and notes.cudnn.startswith("cudnn.benchmark ")
    assert torch.backends.cudnn.benchmark == before
    assert runtime.describe(torch.device("meta")) == ("meta default allocator", "")
