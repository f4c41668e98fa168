"""``--executor local``: up to N runs at once on this machine, each defense after its attack; with GPUs
each run gets its own (``CUDA_VISIBLE_DEVICES``, ``--gpus-per-run`` of them)."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from typing import Dict, List, Optional, Tuple

from ..errors import ConfigError, Preempted
from .execute import Grid, command, child_env, host_name, launch
from .plan import Run

WAKE_S = 0.5  # the loop wakes at once when a run ends; this bounds a wait otherwise


def visible_gpus() -> List[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g for g in listed.split(",") if g.strip() and g.strip() != "-1"]
    try:
        import torch
        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - no usable CUDA: a CPU machine
        return []


def default_workers(runs: List[Run], gpus: List[str], gpus_per_run: Optional[int]) -> int:
    """One run per GPU (or per --gpus-per-run GPUs) where the table needs GPUs and there are some; else one."""
    need = gpus_per_run or max((r.gpus for r in runs), default=0)
    return max(1, len(gpus) // need) if gpus and need else 1


def run_local(grid: Grid, workers: int, gpus_per_run: Optional[int] = None, threads: Optional[int] = None,
              gpus: Optional[List[str]] = None) -> None:
    """Run the grid's pending runs; raise Preempted when SIGTERM/SIGINT stops the executor itself."""
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1; got {workers}")
    free = list(visible_gpus() if gpus is None else gpus)
    widest = max(((gpus_per_run or r.gpus) for r in grid.runs), default=0) if free else 0
    if widest > len(free):
        raise ConfigError(f"a run needs {widest} GPUs and this machine shows {len(free)}; pass --gpus-per-run "
                          f"{len(free)} or fewer")
    running: Dict[subprocess.Popen, Tuple[Run, List[str], List[str], float]] = {}
    ended: "queue.Queue[subprocess.Popen]" = queue.Queue()  # each run's waiter thread puts it here
    stop: List[int] = []

    def on_signal(signum, _frame):
        if not stop:
            stop.append(signum)
            for p in running:  # each plugin run checkpoints after its batch and exits 75
                p.send_signal(signal.SIGTERM)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            if not stop:
                for run in grid.ready():
                    if len(running) >= workers:
                        break
                    if not grid.startable(run):
                        continue
                    need = (gpus_per_run or run.gpus) if widest else 0
                    if need > len(free):
                        break
                    ids, free = free[:need], free[need:]
                    argv = command(run)
                    env = child_env(os.environ, threads or run.cpus, ids if need else None)
                    start = time.time()
                    grid.started(run, argv, host_name(), f"gpu:{','.join(ids)}" if need else "cpu", start)
                    try:
                        proc = launch(run, argv, env, grid.attempts[run.id])
                    except OSError as exc:  # e.g. no such interpreter: this run fails, the grid goes on
                        free += ids
                        grid.finished(run, None, argv, host_name(), "cpu", start, time.time(),
                                      error=f"could not start: {exc}")
                        continue
                    running[proc] = (run, argv, ids, start)
                    threading.Thread(target=lambda p=proc: (p.wait(), ended.put(p)), daemon=True).start()
            if not running and (stop or not grid.ready()):
                break
            try:
                proc = ended.get(timeout=WAKE_S)
            except queue.Empty:
                continue
            run, argv, ids, start = running.pop(proc)
            free += ids
            grid.finished(run, proc.returncode, argv, host_name(), f"gpu:{','.join(ids)}" if ids else "cpu",
                          start, time.time())
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    for run in grid.unsettled():  # only when stopped (or a dependency outside the plan)
        if stop:
            grid.stopped(run)
        else:
            grid.block(run, "its dependencies never settled")
    if stop:
        raise Preempted(f"the grid was stopped by {signal.Signals(stop[0]).name}; run the same command again to "
                        f"continue (finished runs are skipped, interrupted plugin runs resume)")
