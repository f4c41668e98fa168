"""bench_scripts/speed.py at toy size: every mode runs in its own process on the same data, the
table shows the ratios, and fp32 ends where the reference schedule ends (same math)."""

from __future__ import annotations

import pytest
import json
import subprocess
import sys
from pathlib import Path
from tests.helpers.scripts import load_bench_script

SPEED = Path(__file__).resolve().parents[2] / "bench_scripts" / "speed.py"


def _speed_module():
    return load_bench_script("speed")


@pytest.mark.slow
def test_speed_script_compares_the_three_modes(tmp_path):
    out_json = tmp_path / "speed.json"
    proc = subprocess.run([sys.executable, str(SPEED), "--epochs", "2", "--n_clean", "32", "--n_test", "32",
                           "--n_bd", "27", "--batch_size", "16", "--size", "8", "--threads", "1",
                           "--json", str(out_json)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("device: cpu, threads: 1, epochs: 2, clean samples: 32, test: 32 clean + 27 poisoned")
    rows = {line.split()[0]: line for line in lines if line.split() and line.split()[0] in ("reference", "fp32", "amp")}
    assert set(rows) == {"reference", "fp32", "amp"} and "1.00x" in rows["reference"]
    assert "fp32 vs reference, final |difference| (points)" in proc.stdout
    if sys.platform.startswith("linux"):  # the reference keeps the default allocator, as BackdoorBench runs
        assert "allocator: reference default allocator; fp32 glibc heap reuse" in proc.stdout

    results = {r["mode"]: r for r in json.loads(out_json.read_text())["results"]}
    assert [len(r["rows"]) for r in results.values()] == [2, 2, 2]
    for r in results.values():
        assert r["peak_mb"] > 0 and all(x["unlearn_s"] > 0 and x["eval_s"] > 0 for x in r["rows"])
    # identical math: the same predictions after 2 epochs, up to float noise (at most one sample of 32 / 27)
    for key, n in (("test_acc", 32), ("test_asr", 27), ("test_ra", 27)):
        for fp32, ref in zip(results["fp32"]["rows"], results["reference"]["rows"]):
            assert abs(fp32[key] - ref[key]) <= 1 / n + 1e-9, (key, fp32[key], ref[key])

    # without the reference mode the table has no ratio rather than a made-up one
    table = _speed_module().summarise([results["fp32"], results["amp"]], None)
    assert "nan" not in table and all(line.split()[-5] == "-" for line in table.splitlines()[2:4])
