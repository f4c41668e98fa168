"""``--executor ray``: each run a Ray task (its command a subprocess inside the task) with the run's
CPUs and GPUs; a defense task takes its attack task's outcome as an argument, so Ray starts it only
after the attack; Ray retries a task whose worker or node died. Ray is an optional dependency."""

from __future__ import annotations

import os
import time
import uuid
from typing import Any, Dict, Optional

from ..errors import ConfigError, Preempted
from .execute import Grid, child_env, command, is_done, launch
from .plan import Run

MAX_RETRIES = 3  # Ray re-runs a task whose worker process or node died this often
POLL_S = 0.2


def import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError('--executor ray needs Ray, which is not installed: pip install -e ".[ray]" '
                          '(or pip install ray)') from None
    return ray


def _run_task(run: Run, threads: int, events, dep: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Inside a Ray worker: run one command to its end (the command is built here, so a retry after a
    dead worker resumes what the dead one left)."""
    import ray

    if dep is not None and not dep.get("ok"):
        return {"blocked": f"{dep['run']} did not succeed"}
    host = os.uname().nodename
    gpu_ids = [str(g) for g in ray.get_gpu_ids()]
    device = f"gpu:{','.join(gpu_ids)}" if gpu_ids else "cpu"
    argv = command(run)
    start = time.time()
    events.put((run.id, argv, host, device, start))
    rc = launch(run, argv, child_env(os.environ, threads)).wait()
    return {"run": run.id, "ok": rc == 0 and is_done(run), "rc": rc, "argv": argv, "host": host, "device": device,
            "start": start, "end": time.time()}


def _sees(path: str) -> tuple:
    return os.uname().nodename, os.path.isfile(path)


def check_shared_storage(ray, folder: str) -> None:
    """Every alive node must see ``folder`` (the record folder) at the same path: a token file the driver
    writes there, looked for by one task pinned to each node."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    os.makedirs(folder, exist_ok=True)
    token = os.path.join(folder, f".sau-bench-{uuid.uuid4().hex}")
    open(token, "w").close()
    try:
        probe = ray.remote(num_cpus=0)(_sees)
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        seen = ray.get([probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                        .remote(token) for n in nodes], timeout=120)
    finally:
        os.remove(token)
    blind = [host for host, ok in seen if not ok]
    if blind:
        raise ConfigError(f"the record folder {folder} is not visible on node(s) {', '.join(sorted(set(blind)))}: "
                          f"with --executor ray it must be on storage every node mounts at the same path (NFS, ...)")


def connect(ray, address: Optional[str], num_cpus: int) -> bool:
    """Join the cluster at ``address`` (or RAY_ADDRESS) unchanged, else start a local instance of
    ``num_cpus`` CPUs. True when this call started Ray (and so must shut it down)."""
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    quiet = dict(log_to_driver=False, include_dashboard=False, configure_logging=True, logging_level="WARNING")
    if address:
        ray.init(address=address, **quiet)
    else:
        ray.init(num_cpus=num_cpus, **quiet)
    return True


def run_ray(grid: Grid, record_dir: str, address: Optional[str] = None, workers: int = 1,
            gpus_per_run: Optional[int] = None, cpus_per_run: Optional[int] = None,
            threads: Optional[int] = None) -> None:
    ray = import_ray()
    if not grid.unsettled():  # every run done already: no cluster needed
        return
    from ray.util.queue import Queue

    cpus = max((cpus_per_run or r.cpus for r in grid.runs), default=1)
    started_here = connect(ray, address, num_cpus=max(1, workers) * max(1, cpus))
    try:
        check_shared_storage(ray, os.path.abspath(record_dir))
        events = Queue()
        task = ray.remote(max_retries=MAX_RETRIES, retry_exceptions=False)(_run_task)
        refs: Dict[Any, Run] = {}
        by_run: Dict[str, Any] = {}

        def submit(run: Run) -> None:
            bad = [d for d in run.deps if grid.state.get(d) in ("failed", "blocked")]
            if bad:
                grid.block(run, f"{bad[0]} did not succeed")
                return
            if not grid.startable(run):
                return
            dep = next((by_run[d] for d in run.deps if grid.state.get(d) == "pending"), None)
            n_cpus = cpus_per_run or run.cpus
            ref = task.options(num_cpus=n_cpus, num_gpus=gpus_per_run or run.gpus).remote(
                run, threads or n_cpus, events, dep)
            refs[ref] = run
            by_run[run.id] = ref

        for run in grid.runs:
            if grid.state[run.id] == "pending":
                submit(run)
        starts: Dict[str, tuple] = {}
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1, timeout=POLL_S)
            while not events.empty():
                run_id, argv, host, device, start = events.get_nowait()
                starts[run_id] = (argv, host, device, start)
                if grid.state[run_id] in ("pending", "running"):
                    grid.started(grid.by_id[run_id], argv, host, device, start)
            for ref in done:
                run = refs.pop(ref)
                _settle(ray, grid, run, ref, starts.get(run.id), submit)
    except KeyboardInterrupt:
        for ref in list(refs):
            ray.cancel(ref, force=True)
        for run in grid.unsettled():
            grid.stopped(run)
        raise Preempted("the grid was interrupted; run the same command again to continue") from None
    finally:
        if started_here:
            ray.shutdown()


def _settle(ray, grid: Grid, run: Run, ref, start: Optional[tuple], submit) -> None:
    try:
        out = ray.get(ref)
    except Exception as exc:  # noqa: BLE001 - the task's worker died beyond its retries, or its dependency did
        bad = [d for d in run.deps if grid.state.get(d) in ("failed", "blocked")]
        if bad:
            grid.block(run, f"{bad[0]} did not succeed")
            return
        argv, host, device, t0 = start or (list(run.argv), "?", "?", time.time())
        grid.finished(run, None, argv, host, device, t0, time.time(),
                      error=f"Ray task failed: {' '.join(str(exc).split())[:300]}")
        return
    if "blocked" in out:
        grid.block(run, out["blocked"])
        return
    if grid.state[run.id] != "running":  # its start event was not read yet
        grid.started(run, out["argv"], out["host"], out["device"], out["start"])
    if grid.finished(run, out["rc"], out["argv"], out["host"], out["device"], out["start"], out["end"]) == "requeued":
        submit(run)
