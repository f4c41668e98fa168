"""A real tiny grid end to end with each executor: cpu_bench on the offline generator data, two attacks
(one epoch, width 4), fine-tuning and SAU (3 epochs, 100 clean digits), 2 workers. Results, ledger and
report are written; a rerun skips everything; a SAU run SIGKILLed after its first checkpoint is resumed
(on the rerun locally, by Ray's retry of the killed worker's task) and ends bitwise equal to an
uninterrupted run; the Ray grid reports the same figures as the local one."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List, Optional

import pytest
import torch

from sau_plugin.safeload import load_weights_only

REPO = Path(__file__).resolve().parents[2]
TINY = ["--attacks", "badnet,blended", "--defenses", "ft,sau", "--workers", "2", "--cpus-per-run", "1",
        "--attack-args", "--epochs 1 --width 4", "--defense-args", "--epochs 3 --ratio 0.025 --no_progress",
        "--no-progress"]
SAU = ("badnet", "sau")  # the run that is killed


def bench(base: Path, *extra: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "sau_plugin", "bench", "cpu_bench", *TINY, "--python", sys.executable,
            "--record_dir", str(base / "rec"), "--report-dir", str(base / "reports"), "--log-dir", str(base / "logs"),
            *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)


def ledger(base: Path) -> List[dict]:
    return [json.loads(line) for line in (base / "reports" / "cpu_bench.runs.jsonl").read_text().splitlines()]


def run_pid(base: Path, attack: str, defense: str) -> Optional[int]:
    """The pid of the `sau-plugin defend` process of (attack, defense) under ``base``."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            args = Path(f"/proc/{entry}/cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        if ("defend" in args and str(base / "rec") in args and args[args.index("--result_file") + 1] == attack
                and args[args.index("--defense_name") + 1] == defense):
            return int(entry)
    return None


def kill_after_first_checkpoint(base: Path, parent: bool, killed: list) -> None:
    """SIGKILL the SAU run (or, ``parent``, the Ray worker that started it) once its checkpoint exists."""
    checkpoint = base / "rec" / SAU[0] / "defense" / SAU[1] / "checkpoint" / "last.pt"
    for _ in range(6000):
        pid = run_pid(base, *SAU) if checkpoint.is_file() else None
        if pid:
            target = int(Path(f"/proc/{pid}/stat").read_text().split(") ")[1].split()[1]) if parent else pid
            os.kill(target, signal.SIGKILL)
            killed.append(pid)
            return
        time.sleep(0.05)


def in_background(base: Path, parent: bool):
    killed: list = []
    thread = threading.Thread(target=kill_after_first_checkpoint, args=(base, parent, killed), daemon=True)
    thread.start()
    return thread, killed


def model(base: Path, attack: str, defense: str) -> dict:
    path = base / "rec" / attack / "defense" / defense / "defense_result.pt"
    return load_weights_only(path, "defense_result.pt", "-")["model"]


def bitwise_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def report_rows(base: Path) -> List[str]:
    return [line for line in (base / "reports" / "cpu_bench.md").read_text().splitlines() if line.startswith("|")]


@pytest.fixture(scope="module")
def local_grid(tmp_path_factory):
    base = tmp_path_factory.mktemp("local")
    thread, killed = in_background(base, parent=False)
    first = bench(base)
    thread.join(5)
    return base, first, killed


@pytest.mark.slow
def test_local_grid_results_ledger_report_rerun_and_resume(local_grid):
    base, first, killed = local_grid
    assert killed, first.stdout + first.stderr
    assert first.returncode == 1, first.stderr
    assert "6 runs: 5 run now, 0 already done, 1 failed or blocked" in first.stdout
    assert f"  failed: badnet/defense/sau: exit -9; log {base / 'logs' / 'badnet.sau.log'}" in first.stderr
    last = {e["run"]: e for e in ledger(base)}
    assert {k: v["status"] for k, v in last.items()} == {
        "badnet (attack)": "done", "badnet/defense/ft": "done", "badnet/defense/sau": "failed",
        "blended (attack)": "done", "blended/defense/ft": "done", "blended/defense/sau": "done"}
    assert (base / "reports" / "cpu_bench.md").is_file() and (base / "reports" / "leaderboard.csv").is_file()
    assert (base / "rec" / "blended" / "defense" / "sau" / "defense_result.pt").is_file()

    n = len(ledger(base))
    second = bench(base)
    assert second.returncode == 0, second.stderr
    assert "6 runs: 1 run now, 5 already done, 0 failed or blocked" in second.stdout
    events = ledger(base)[n:]
    assert sorted(e["status"] for e in events) == ["done", "running"] + ["skipped"] * 5
    resumed = [e for e in events if e["run"] == "badnet/defense/sau"]
    assert resumed[0]["command"].endswith("--resume") and resumed[-1]["status"] == "done"
    plugin_logs = " ".join(f.read_text() for f in (base / "rec" / "badnet" / "defense" / "sau" / "log").glob("*.log"))
    assert re.search(r"resumed from \S+last.pt after epoch [12] of 3", plugin_logs)  # killed in epoch 2 or 3
    for label in ("BadNets", "Blended"):  # no defense, FT, Vanilla AT (not run), SAU: 4 cells each
        cells = next(r for r in report_rows(base) if r.startswith(f"| {label} |")).split("|")[2:18]
        assert [c.strip() == "missing" for c in cells] == [False] * 8 + [True] * 4 + [False] * 4, cells

    n = len(ledger(base))
    third = bench(base)
    assert third.returncode == 0 and "6 runs: 0 run now, 6 already done, 0 failed or blocked" in third.stdout
    assert [e["status"] for e in ledger(base)[n:]] == ["skipped"] * 6

    # the resumed model is the one an uninterrupted run gives
    argv = resumed[0]["command"].split()[:-1]  # without --resume
    argv[argv.index("--defense_name") + 1] = "sau_uninterrupted"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    subprocess.run(argv, cwd=REPO, env=env, check=True, capture_output=True, timeout=300)
    assert bitwise_equal(model(base, "badnet", "sau"), model(base, "badnet", "sau_uninterrupted"))


@pytest.mark.slow
def test_ray_grid_retries_a_killed_worker_and_matches_the_local_figures(local_grid, tmp_path):
    pytest.importorskip("ray")
    local_base = local_grid[0]
    if not (local_base / "rec" / "badnet" / "defense" / "sau" / "defense_result.pt").is_file():
        assert bench(local_base).returncode == 0  # the local test did not run: finish its grid
    thread, killed = in_background(tmp_path, parent=True)
    proc = bench(tmp_path, "--executor", "ray")
    thread.join(5)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert killed, "the SAU run's Ray worker was not killed"
    assert "6 runs: 6 run now, 0 already done, 0 failed or blocked" in proc.stdout
    sau = [e for e in ledger(tmp_path) if e["run"] == "badnet/defense/sau"]
    assert [e["status"] for e in sau] == ["running", "running", "done"] and sau[-1]["attempts"] == 2
    assert sau[1]["command"].endswith("--resume")  # the retry continued the killed run's checkpoint
    assert report_rows(tmp_path) == report_rows(local_base)  # the same figures, to the printed digit
    for attack in ("badnet", "blended"):
        for defense in ("ft", "sau"):
            assert bitwise_equal(model(tmp_path, attack, defense), model(local_base, attack, defense))
    again = bench(tmp_path, "--executor", "ray")
    assert again.returncode == 0 and "6 runs: 0 run now, 6 already done, 0 failed or blocked" in again.stdout
