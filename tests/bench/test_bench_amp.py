"""bench_scripts/amp_bench.py at toy size: records per attack x seed, SAU in fp32 and bf16 on
the same clean subset, a table with the verdict, per-run and per-epoch CSVs and the PNG."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from sau_plugin.core.precision import cpu_supports_bf16

AMP_BENCH = Path(__file__).resolve().parents[2] / "bench_scripts" / "amp_bench.py"


@pytest.mark.slow
@pytest.mark.skipif(not cpu_supports_bf16(), reason="torch reports no native bf16 on this CPU: amp would run fp32")
def test_amp_bench_compares_fp32_and_bf16_over_seeds(tmp_path):
    proc = subprocess.run([sys.executable, str(AMP_BENCH), "--attacks", "badnet", "--seeds", "0,1",
                           "--attack-args", "--attack_epochs 1 --width 4",
                           "--defense-args", "--n_rounds 2 --ratio 0.02 --batch_size 40",
                           "--threads", "1", "--out", str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "amp = bf16 autocast" in proc.stdout
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| badnet |")]
    assert [r.split("|")[2].strip() for r in rows] == ["ACC", "ASR", "R-ACC"]
    assert "verdict: amp is" in proc.stdout
    with open(tmp_path / "amp_bench_runs.csv") as f:
        runs = list(csv.DictReader(f))
    assert sorted((r["seed"], r["mode"]) for r in runs) == [("0", "amp"), ("0", "fp32"), ("1", "amp"), ("1", "fp32")]
    assert all("bf16" in r["precision"] for r in runs if r["mode"] == "amp")
    assert all(r["precision"].startswith("fp32") for r in runs if r["mode"] == "fp32")
    with open(tmp_path / "amp_bench_curves.csv") as f:
        epochs = sorted({int(r["epoch"]) for r in csv.DictReader(f)})
    assert epochs == [0, 1]
    assert (tmp_path / "amp_bench_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a second run keeps the finished SAU runs instead of repeating them
    again = subprocess.run([sys.executable, str(AMP_BENCH), "--attacks", "badnet", "--seeds", "0,1",
                            "--attack-args", "--attack_epochs 1 --width 4",
                            "--defense-args", "--n_rounds 2 --ratio 0.02 --batch_size 40",
                            "--threads", "1", "--out", str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and "SAU runs: 0 in" in again.stdout
