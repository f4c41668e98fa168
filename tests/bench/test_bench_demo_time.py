"""bench_scripts/demo_time.py: the demo's per-phase times from fresh processes, and their median."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.scripts import load_bench_script

SCRIPT = Path(__file__).resolve().parents[2] / "bench_scripts" / "demo_time.py"
DEMO_OUT = """[demo] attack badnet -> SAU (sau_demo/record)

                 ACC     ASR   R-ACC     DER   wall time
--------------------------------------------------------
No defense     97.20   99.78    0.22       -      28.5 s
SAU            95.60    0.67   96.56   98.76      45.0 s

time per phase: attack 28.9 s, sau 45.0 s, sau/load 0.1 s, sau/unlearn 37.2 s, sau/eval 5.4 s, sau/write 2.3 s
"""


def _module():
    return load_bench_script("demo_time")


def test_parse_reads_the_phases_and_the_table():
    out = _module().parse(DEMO_OUT)
    assert out["attack"] == 28.9 and out["sau"] == 45.0 and out["sau/unlearn"] == 37.2 and out["sau/write"] == 2.3
    assert (out["before_acc"], out["before_asr"], out["after_acc"], out["after_asr"]) == (97.2, 99.78, 95.6, 0.67)


def test_parse_refuses_output_without_the_phases():
    with pytest.raises(SystemExit, match="lacks attack"):
        _module().parse("something else\n")


@pytest.mark.slow
def test_runs_the_demo_in_fresh_folders_and_prints_the_median(tmp_path):
    tiny = ["--attack_epochs", "1", "--width", "4", "--attack_batch_size", "256", "--epochs", "1", "--device", "cpu"]
    proc = subprocess.run([sys.executable, str(SCRIPT), "--runs", "2", "--keep", str(tmp_path), "--", *tiny],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:3] == ["run", "process", "attack"]
    runs = [line.split() for line in lines[1:3]]
    assert [r[0] for r in runs] == ["0", "1"] and lines[3].startswith("med")
    med = [float(v) for v in lines[3].split()[1:]]
    for col in range(len(med)):  # two runs: the median is their mean
        assert med[col] == pytest.approx((float(runs[0][col + 1]) + float(runs[1][col + 1])) / 2, abs=0.011)
    for i in (0, 1):  # each run had its own folder, data and attack included
        assert (tmp_path / f"run{i}" / "sau_demo" / "record" / "badnet_demo" / "attack_result.pt").is_file()
        assert (tmp_path / f"run{i}" / "sau_demo" / "data" / "mnist").is_dir()
