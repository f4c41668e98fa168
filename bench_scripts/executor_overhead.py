"""The bench executors' own cost per run: a grid of no-op runs (each makes its marker with ``sh``),
attacks with their defenses as in a table, run directly one after the other (the floor: starting the
processes), by the local executor and, with ``--ray``, by the Ray executor on a local Ray instance.

    python bench_scripts/executor_overhead.py --runs 200 --workers 2 --ray

Prints, per executor, the wall time and the time per run; "overhead" is the executor's time per run
minus the direct loop's, with one worker (the same work, one run at a time).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import List, Optional

from sau_plugin.bench import Run
from sau_plugin.bench.execute import Grid, Ledger
from sau_plugin.bench.local import run_local

DEFENSES_PER_ATTACK = 4
MAKE_MARKER = 'mkdir -p "${0%/*}" && : > "$0"'


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=200, help="no-op runs in the grid (default: %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="runs at once for the parallel rows (default: %(default)s)")
    p.add_argument("--ray", action="store_true", help="also time the Ray executor (a local Ray instance)")
    return p


def no_op_grid(folder: Path, n: int) -> List[Run]:
    runs: List[Run] = []
    attack: Optional[Run] = None
    for i in range(n):
        marker = f"rec/{i}/done"  # as in a table: an attack's folder must not exist before it runs
        is_attack = i % (DEFENSES_PER_ATTACK + 1) == 0
        run = Run(id=f"run{i}", kind="attack" if is_attack else "defense", argv=("sh", "-c", MAKE_MARKER, marker),
                  cwd=str(folder), marker=marker, log=f"logs/{i}.log", gpus=0, cpus=1,
                  deps=() if is_attack or attack is None else (attack.id,))
        attack = run if is_attack else attack
        runs.append(run)
    return runs


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def direct(runs: List[Run]) -> None:
    for run in runs:
        with open(os.path.join(run.cwd, run.log), "ab") as log:
            subprocess.run(run.argv, cwd=run.cwd, stdout=log, stderr=subprocess.STDOUT, check=True)


def executor(kind: str, runs: List[Run], folder: Path, workers: int, ray=None) -> None:
    grid = Grid(runs, Ledger(str(folder / "reports" / "grid.runs.jsonl")), progress=False)
    if kind == "local":
        run_local(grid, workers, gpus=[])
    else:
        from sau_plugin.bench.ray_exec import run_ray
        run_ray(grid, str(folder / "rec"), workers=workers)
    counts = grid.close()
    assert counts.get("done") == len(runs), counts


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    rows = []
    cases = [("direct loop", 1, None), ("local", 1, "local"), ("local", args.workers, "local")]
    cases += [("ray", 1, "ray"), ("ray", args.workers, "ray")] if args.ray else []
    for label, workers, kind in cases:
        if kind == "ray":  # a local instance of `workers` CPUs, started before the clock runs
            import ray
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
        try:
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp)
                (folder / "rec").mkdir()
                (folder / "logs").mkdir()
                runs = no_op_grid(folder, args.runs)
                seconds = timed(lambda: direct(runs) if kind is None else executor(kind, runs, folder, workers))
                rows.append((label, workers, seconds))
        finally:
            if kind == "ray":
                ray.shutdown()
    floor = rows[0][2] / args.runs
    print(f"{args.runs} no-op runs ({args.runs // (DEFENSES_PER_ATTACK + 1)} attacks with "
          f"{DEFENSES_PER_ATTACK} defenses each)")
    print(f"{'executor':<12} {'workers':>7} {'wall s':>8} {'ms/run':>8} {'overhead ms/run':>16}")
    for label, workers, seconds in rows:
        per_run = seconds / args.runs
        overhead = f"{(per_run - floor) * 1000:16.1f}" if workers == 1 and label != "direct loop" else f"{'':>16}"
        print(f"{label:<12} {workers:>7} {seconds:8.2f} {per_run * 1000:8.1f} {overhead}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
