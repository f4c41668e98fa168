"""cpu_heap_reuse: large freed CPU blocks stay in the heap, so re-allocating an activation
costs no page faults (each case in a fresh process: the setting is process-wide)."""

from __future__ import annotations

import ctypes.util
import json
import subprocess
import sys

import pytest

PROBE = r"""
import copy, json, resource, sys, torch
from sau_plugin import SAUConfig, Unlearner
model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2))
model(torch.zeros(1, 3, 8, 8))
u = Unlearner(model, copy.deepcopy(model), SAUConfig(device="cpu", amp=False, cpu_heap_reuse=sys.argv[1] == "on"))
x = torch.ones(64, 2**20 // 4)  # 64 MB, above glibc's largest mmap threshold
for _ in range(3):
    (x * 2).sum()  # warm-up
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    (x * 2).sum()  # a fresh 64 MB result, freed at once
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"note": u.allocator_note, "faults": faults}))
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
    assert off["faults"] >= 10 * 16384 * 0.9, off  # 64 MB in 4 KiB pages, faulted in anew every time
    # the block is reused from the heap (now and then glibc places one anew: at most a few of ten)
    assert on["faults"] <= 3 * 16384, on
