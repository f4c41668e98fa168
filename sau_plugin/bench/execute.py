"""What both executors share: the command of a run, starting it with its log, and the grid's
bookkeeping (done runs skipped, a failure blocks only its dependents, exit 75 re-queued with
``--resume``), written to the ledger one event a line and shown as a progress bar."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import Preempted
from .plan import Run

PREEMPTED = Preempted.exit_code
MAX_REQUEUES = 3  # a run preempted more often than this counts as failed
FINAL = ("done", "skipped", "failed", "blocked", "stopped")


def _path(run: Run, rel: str) -> str:
    return os.path.join(run.cwd, rel)


def is_done(run: Run) -> bool:
    return os.path.isfile(_path(run, run.marker))


def command(run: Run) -> List[str]:
    """argv, plus ``--resume`` for a plugin run whose output folder holds an interrupted run's files
    (without it the plugin refuses the existing folder; with no checkpoint there it starts afresh)."""
    argv = list(run.argv)
    out = _path(run, run.resume_dir) if run.resume_dir else None
    if out and os.path.isdir(out) and os.listdir(out) and "--resume" not in argv:
        argv.append("--resume")
    return argv


def blocker(run: Run) -> Optional[str]:
    """Why a run cannot start, or None."""
    missing = [f for f in run.needs if not os.path.isfile(_path(run, f))]
    if missing:
        return f"needs {', '.join(missing)} (see the readme files under BackdoorBench's resource/)"
    folder = os.path.dirname(run.marker)
    if run.kind == "attack" and os.path.isdir(_path(run, folder)):
        return f"{folder} exists without {os.path.basename(run.marker)} (interrupted?); move it away to rerun"
    return None


def child_env(base: Dict[str, str], threads: int, gpu_ids: Optional[Sequence[str]] = None) -> Dict[str, str]:
    """The run's environment: its CPU thread count (``--cpus-per-run``, else the executor's own
    OMP_NUM_THREADS, else the table's cpus; not Ray's per-worker value) and its GPUs."""
    env = dict(base)
    env["OMP_NUM_THREADS"] = str(threads)
    if gpu_ids is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpu_ids)
    return env


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """A run outlives no executor: if the process that started it dies (a killed Ray worker, a killed
    driver), the kernel kills the run too; its last checkpoint stays and the retry resumes from it."""
    if sys.platform.startswith("linux"):
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def launch(run: Run, argv: Sequence[str], env: Dict[str, str], attempt: Optional[int] = None) -> subprocess.Popen:
    """Start ``argv`` in the run's folder, stdout and stderr appended to its log."""
    log_path = _path(run, run.log)
    os.makedirs(os.path.dirname(log_path) or ".", exist_ok=True)
    with open(log_path, "ab") as log:
        what = f"attempt {attempt}" if attempt else "start"
        log.write(f"# {what} on {socket.gethostname()} at {_stamp(time.time())}: {shlex.join(argv)}\n".encode())
        log.flush()
        return subprocess.Popen(list(argv), cwd=run.cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)


class Ledger:
    """``<report-dir>/<table>.runs.jsonl``: one JSON object per event, appended and closed as it happens,
    so the record of a grid survives the executor's own crash."""

    def __init__(self, path: str):
        self.path = path
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)

    def write(self, **event) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"time": _stamp(time.time()), **event}) + "\n")


def _stamp(t: Optional[float]) -> Optional[str]:
    return None if t is None else time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


class Grid:
    """The state of every run (pending, running, done, skipped, failed, blocked) and the events of each."""

    def __init__(self, runs: Sequence[Run], ledger: Ledger, progress: bool = True):
        from tqdm import tqdm

        self.runs = list(runs)
        self.by_id = {r.id: r for r in self.runs}
        self.ledger = ledger
        self.state: Dict[str, str] = {}
        self.attempts: Counter = Counter()
        self.requeues: Counter = Counter()
        self.reasons: Dict[str, str] = {}
        for run in self.runs:
            self.state[run.id] = "skipped" if is_done(run) else "pending"
            if self.state[run.id] == "skipped":
                self._event(run, "skipped", reason=f"{run.marker} exists")
        skipped = sum(s == "skipped" for s in self.state.values())
        self.bar = tqdm(total=len(self.runs), initial=skipped, unit="run", disable=not progress, file=sys.stderr,
                        dynamic_ncols=True, desc="runs")
        self._show()

    # ---- events -----------------------------------------------------------------------------------------
    def _event(self, run: Run, status: str, **fields) -> None:
        self.ledger.write(run=run.id, kind=run.kind, status=status, attempts=self.attempts[run.id], log=run.log,
                          **fields)

    def _show(self) -> None:
        counts = Counter(self.state.values())
        self.bar.set_postfix_str(f"done {counts['done'] + counts['skipped']}, running {counts['running']}, "
                                 f"failed {counts['failed'] + counts['blocked']}, pending {counts['pending']}")

    def _settle(self, run: Run, status: str, reason: Optional[str] = None, **fields) -> None:
        self.state[run.id] = status
        if reason:
            self.reasons[run.id] = reason
        self._event(run, status, reason=reason, **fields)
        self.bar.update(1)
        self._show()

    def ready(self) -> List[Run]:
        """Pending runs whose dependencies succeeded, in plan order; those of a failed run settle as blocked."""
        out = []
        for run in self.runs:
            if self.state[run.id] != "pending":
                continue
            bad = [d for d in run.deps if self.state.get(d) in ("failed", "blocked", "stopped")]
            if bad:
                self.block(run, f"{bad[0]} did not succeed")
            elif all(self.state.get(d, "done") in ("done", "skipped") for d in run.deps):
                out.append(run)
        return out

    def startable(self, run: Run) -> bool:
        """False (and the run settled as blocked) when a file it needs is missing or its folder is in the way."""
        why = blocker(run)
        if why:
            self.block(run, why)
        return not why

    def block(self, run: Run, reason: str) -> None:
        self._settle(run, "blocked", reason)

    def stopped(self, run: Run) -> None:
        """Left unfinished because the executor itself was stopped: the next invocation continues it."""
        self._settle(run, "stopped", "the executor was stopped; run the same command again to continue")

    def started(self, run: Run, argv: Sequence[str], host: str, device: str, start: float) -> None:
        self.state[run.id] = "running"
        self.attempts[run.id] += 1
        self._event(run, "running", command=shlex.join(argv), host=host, device=device, start=_stamp(start))
        self._show()

    def finished(self, run: Run, rc: Optional[int], argv: Sequence[str], host: str, device: str, start: float,
                 end: float, error: Optional[str] = None) -> str:
        """Settle one attempt: 'done', 'failed' or 'requeued' (exit 75 of a resumable run: pending again)."""
        fields = dict(command=shlex.join(argv), host=host, device=device, start=_stamp(start), end=_stamp(end),
                      exit_code=rc)
        if rc == 0 and is_done(run):
            self._settle(run, "done", **fields)
            return "done"
        if rc == PREEMPTED and run.resume_dir and self.requeues[run.id] < MAX_REQUEUES:
            self.requeues[run.id] += 1
            self.state[run.id] = "pending"
            self._event(run, "preempted", reason="exit 75: re-queued with --resume", **fields)
            self._show()
            return "requeued"
        reason = error or (f"exit {rc}" if rc else f"exited 0 without writing {run.marker}")
        self._settle(run, "failed", reason, **fields)
        return "failed"

    # ---- the end ----------------------------------------------------------------------------------------
    def unsettled(self) -> List[Run]:
        return [r for r in self.runs if self.state[r.id] not in FINAL]

    def failures(self) -> List[Tuple[Run, str]]:
        return [(r, self.reasons.get(r.id, "")) for r in self.runs if self.state[r.id] in ("failed", "blocked")]

    def close(self) -> Dict[str, int]:
        self.bar.close()
        return dict(Counter(self.state.values()))


def host_name() -> str:
    return socket.gethostname()
