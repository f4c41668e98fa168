"""Fake runs for the executor tests: a tiny script that succeeds, fails, sleeps, exits 75 until it is
given --resume, or writes no marker, and logs its start, end, pid and GPUs to one events file."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path
from typing import Dict, List, Sequence

from sau_plugin.bench import Run

SCRIPT = textwrap.dedent('''
    import json, os, sys, time
    args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
    resumed = "--resume" in sys.argv
    def event(what):
        with open(args["--events"], "a") as f:
            f.write(json.dumps({"run": args["--id"], "what": what, "t": time.time(), "pid": os.getpid(),
                                "gpus": os.environ.get("CUDA_VISIBLE_DEVICES"), "resumed": resumed,
                                "threads": os.environ.get("OMP_NUM_THREADS")}) + "\\n")
    event("start")
    print("fake run", args["--id"], flush=True)
    time.sleep(float(args.get("--sleep", 0)))
    mode = args.get("--mode", "ok")
    if mode == "fail":
        sys.exit(3)
    if mode == "preempt" and not resumed:
        os.makedirs(args["--out"], exist_ok=True)
        open(os.path.join(args["--out"], "last.pt"), "w").close()
        event("preempted")
        sys.exit(75)
    if mode != "nomarker":
        os.makedirs(os.path.dirname(args["--marker"]), exist_ok=True)
        open(args["--marker"], "w").close()
    event("end")
''')


def fake_run(tmp: Path, run_id: str, mode: str = "ok", sleep: float = 0.0, deps: Sequence[str] = (),
             gpus: int = 0, kind: str = "attack") -> Run:
    script = tmp / "fake.py"
    if not script.exists():
        script.write_text(SCRIPT)
    slug = run_id.replace("/", "_")
    marker = f"rec/{slug}/result.pt"
    out = f"rec/{slug}/out"
    argv = (sys.executable, str(script), "--id", run_id, "--mode", mode, "--sleep", str(sleep),
            "--marker", marker, "--events", str(tmp / "events.jsonl"), "--out", out)
    return Run(id=run_id, kind=kind, argv=argv, cwd=str(tmp), marker=marker, log=f"logs/{slug}.log", gpus=gpus,
               cpus=1, deps=tuple(deps), resume_dir=out if kind == "defense" else None)


def grid_of(tmp: Path, modes: Dict[str, str], sleep: float = 0.0) -> List[Run]:
    """Attacks a1, a2 and defenses a1/d1, a1/d2, a2/d1, a2/d2; ``modes`` overrides a run's mode."""
    runs = []
    for a in ("a1", "a2"):
        runs.append(fake_run(tmp, a, modes.get(a, "ok"), sleep))
        for d in ("d1", "d2"):
            rid = f"{a}/{d}"
            runs.append(fake_run(tmp, rid, modes.get(rid, "ok"), sleep, deps=(a,), kind="defense"))
    return runs


def events(tmp: Path) -> List[dict]:
    path = tmp / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def ledger(path: Path) -> List[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def final(entries: List[dict]) -> Dict[str, dict]:
    """The last ledger event of each run."""
    return {e["run"]: e for e in entries}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
