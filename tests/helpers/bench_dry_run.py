"""The commands a bench_scripts/*.sh dry run prints today: the reference the planner is held to."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path
from typing import List

SCRIPTS = Path(__file__).resolve().parents[2] / "bench_scripts"
# lib.sh's environment knobs: left out so that the script runs with its defaults
LIB_ENV = ("PYTHON", "RECORD_DIR", "LOG_DIR", "REPORT_DIR", "DEVICE", "PRATIO", "SAU_YAML", "LEADERBOARD")


def script_dry_run(table: str, *args: str, cwd: Path) -> List[List[str]]:
    """argv of each command ``bench_scripts/<table>.sh --dry-run ARGS`` prints (the report last), run in cwd."""
    env = {k: v for k, v in os.environ.items() if k not in LIB_ENV}
    proc = subprocess.run(["bash", str(SCRIPTS / f"{table}.sh"), "--dry-run", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [shlex.split(line) for line in proc.stdout.splitlines() if line and not line.startswith("#")]
