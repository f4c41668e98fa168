"""Wall time of ``sau-plugin demo`` as a new user meets it: each run in a fresh process and an
empty folder (data, attack, SAU, files), phase by phase, with the median over the runs.

    python bench_scripts/demo_time.py --runs 3 [--keep DIR] [-- extra demo flags]

Prints one row per run (the demo's own per-phase times, the process's wall time, and the
figures of its table) and the median of each column. Other jobs on the machine inflate the
times: run it on an idle machine to compare with the figures in the README.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

PHASES = ("attack", "sau/unlearn", "sau/eval", "sau/write", "sau")
ROW = re.compile(r"^(No defense|SAU)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)")


def parse(stdout: str) -> Dict[str, float]:
    """The demo's printed phase times and its table's ACC / ASR (percent) before and after."""
    out: Dict[str, float] = {}
    for line in stdout.splitlines():
        if line.startswith("time per phase:"):
            for name, seconds in re.findall(r"([\w/]+) ([\d.]+) s", line):
                out[name] = float(seconds)
        m = ROW.match(line)
        if m:
            key = "before" if m.group(1) == "No defense" else "after"
            out[f"{key}_acc"], out[f"{key}_asr"] = float(m.group(2)), float(m.group(3))
    missing = [k for k in (*PHASES, "before_acc", "after_asr") if k not in out]
    if missing:
        raise SystemExit(f"demo_time: the demo's output lacks {', '.join(missing)}; is this the plugin's demo?")
    return out


def run_once(folder: Path, extra: List[str]) -> Dict[str, float]:
    cmd = [sys.executable, "-m", "sau_plugin", "demo", "--no_progress",
           "--record_dir", str(folder / "sau_demo" / "record"), *extra]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=folder, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"demo_time: the demo exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return {**parse(done.stdout), "process": wall}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--keep", default=None, help="leave each run's folder under DIR (default: deleted)")
    p.add_argument("extra", nargs="*", help="flags for sau-plugin demo, after --")
    a = p.parse_args(argv)
    if a.runs < 1:
        p.error("--runs must be >= 1")
    cols = ("process", *PHASES, "before_acc", "before_asr", "after_acc", "after_asr")
    print("run  " + "".join(f"{c:>13}" for c in cols))
    rows = []
    for i in range(a.runs):
        if a.keep:
            folder = Path(a.keep) / f"run{i}"
            folder.mkdir(parents=True, exist_ok=False)
            row = run_once(folder, a.extra)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                row = run_once(Path(tmp), a.extra)
        rows.append(row)
        print(f"{i:<5}" + "".join(f"{row[c]:>13.2f}" for c in cols), flush=True)
    print("med  " + "".join(f"{statistics.median(r[c] for r in rows):>13.2f}" for c in cols))
    print("(seconds; ACC / ASR in percent; 'process' is the wall time of the whole command, start-up included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
