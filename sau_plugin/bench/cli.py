"""``sau-plugin bench TABLE``: run a table's grid with an executor (local or Ray), or list it (``--dry-run``)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shlex
import subprocess
import sys
from typing import List, Optional

from ..config.files import shipped_config
from ..errors import ConfigError
from .execute import Grid, Ledger, blocker, command, is_done
from .plan import Run, Selection, plan, report_argv, summary
from .table import Table, load_table, shipped_tables


def _names(text: str) -> List[str]:
    return [n for n in re.split(r"[,\s]+", text) if n]


def _ratios(text: str) -> List[float]:
    try:
        return [float(n) for n in _names(text)]
    except ValueError:
        raise ConfigError(f"--pratios takes numbers separated by commas, e.g. 0.1,0.2; got {text!r}") from None


def _flags(text: str, what: str) -> List[str]:
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise ConfigError(f"{what}: cannot split {text!r} into flags ({exc})") from None


def add_cli(subparsers) -> None:
    p = subparsers.add_parser("bench", help="run a paper table's attacks and defenses (--dry-run: list them)",
                              description="The runs of a benchmark table: every (ratio, attack) and each defense "
                                          "on it, in order. TABLE is a shipped table "
                                          f"({', '.join(shipped_tables())}) or a table YAML's path.")
    p.add_argument("table", metavar="TABLE")
    p.add_argument("--attacks", default="", help="attacks to run, e.g. badnet,blended (default: the table's)")
    p.add_argument("--defenses", default="", help="defenses to run, e.g. sau,fp; 'none' = attacks only")
    p.add_argument("--pratios", default="", help="poisoning ratios to run, e.g. 0.1,0.2 (default: the table's)")
    p.add_argument("--attack-args", default="", help='extra flags for every attack command, e.g. "--epochs 2"')
    p.add_argument("--defense-args", default="", help="extra flags for every plugin-defense command")
    p.add_argument("--record_dir", default=None, help="record folder (default: record; cpu_bench: record_cpu)")
    p.add_argument("--report-dir", default="bench_reports", help="report folder (default: %(default)s)")
    p.add_argument("--log-dir", default=None, help="log folder (default: bench_logs/<table>)")
    p.add_argument("--python", default="python", help="interpreter of the commands (default: %(default)s)")
    p.add_argument("--device", default=None, help="--device of every command (default: the table's, else none)")
    p.add_argument("--no-report", action="store_true", help="leave out the report command")
    p.add_argument("--dry-run", "-n", action="store_true", help="print the commands in order; run nothing")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local: runs at once on this machine; ray: Ray tasks on a cluster (default: %(default)s)")
    p.add_argument("--workers", type=int, default=None,
                   help="runs at once (local; ray without an address: the local instance's size); default: one "
                        "per GPU (or per --gpus-per-run GPUs) when the table needs GPUs and there are some, else 1")
    p.add_argument("--gpus-per-run", type=int, default=None, help="GPUs of each run (default: the table's)")
    p.add_argument("--cpus-per-run", type=int, default=None,
                   help="CPUs of each run: its OMP_NUM_THREADS and its Ray num_cpus (default: the table's; "
                        "OMP_NUM_THREADS set for the executor sets the runs' threads)")
    p.add_argument("--ray-address", default=None,
                   help="the Ray cluster to use unchanged (default: RAY_ADDRESS, else a local Ray instance)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_main)


def with_shipped_config(table: Table, cwd: str) -> Table:
    """A generator table's ``sau_yaml`` as given when it exists from ``cwd`` (the plugin's checkout keeps
    today's argv), else the installed copy of a shipped config of that name, so that a table runs from any folder."""
    if table.sau_yaml is None or os.path.isfile(os.path.join(cwd, table.sau_yaml)):
        return table
    parts = os.path.normpath(table.sau_yaml).split(os.sep)
    if parts[:2] != ["defense_configs", "sau"] or len(parts) != 3:
        return table  # a user's path: root_problems names it
    try:
        return dataclasses.replace(table, sau_yaml=str(shipped_config(parts[2])))
    except ConfigError:
        return table


def _main(args: argparse.Namespace) -> int:
    table = with_shipped_config(load_table(args.table), os.getcwd())
    record_dir = args.record_dir or ("record_cpu" if table.runner == "generator" else "record")
    sel = Selection(attacks=_names(args.attacks), defenses=_names(args.defenses), pratios=_ratios(args.pratios),
                    attack_args=_flags(args.attack_args, "--attack-args"),
                    defense_args=_flags(args.defense_args, "--defense-args"), record_dir=record_dir,
                    log_dir=args.log_dir, cwd=os.getcwd(), python=args.python, device=args.device)
    runs = plan(table, sel)
    for flag in ("workers", "gpus_per_run", "cpus_per_run"):
        value = getattr(args, flag)
        if value is not None and value < (0 if flag == "gpus_per_run" else 1):
            raise ConfigError(f"--{flag.replace('_', '-')} must be at least {0 if flag == 'gpus_per_run' else 1}; "
                              f"got {value}")
    problems = root_problems(table, runs)
    if args.dry_run:
        return _dry_run(table, sel, runs, problems, args)
    if problems:
        raise ConfigError(problems[0])
    if args.executor == "ray":
        from .ray_exec import import_ray
        import_ray()  # before anything is written
    grid = Grid(runs, Ledger(os.path.join(args.report_dir, f"{table.name}.runs.jsonl")),
                progress=not args.no_progress)
    try:
        _execute(grid, args, record_dir)
    finally:
        counts = grid.close()
    print(f"{len(runs)} runs: {counts.get('done', 0)} run now, {counts.get('skipped', 0)} already done, "
          f"{counts.get('failed', 0) + counts.get('blocked', 0)} failed or blocked; ledger {grid.ledger.path}")
    rc = 0 if args.no_report else _report(table, sel, args.report_dir)
    for run, reason in grid.failures():
        print(f"  failed: {run.id}: {reason}; log {run.log}", file=sys.stderr)
    return 1 if grid.failures() else rc


def _execute(grid: Grid, args: argparse.Namespace, record_dir: str) -> None:
    threads = int(os.environ["OMP_NUM_THREADS"]) if os.environ.get("OMP_NUM_THREADS", "").isdigit() else None
    threads = args.cpus_per_run or threads
    if args.executor == "ray":
        from .ray_exec import run_ray
        run_ray(grid, record_dir, address=args.ray_address, workers=args.workers or 1,
                gpus_per_run=args.gpus_per_run, cpus_per_run=args.cpus_per_run, threads=threads)
        return
    from .local import default_workers, run_local, visible_gpus
    gpus = visible_gpus()
    workers = args.workers or default_workers(grid.runs, gpus, args.gpus_per_run)
    run_local(grid, workers, gpus_per_run=args.gpus_per_run, threads=threads, gpus=gpus)


def root_problems(table: Table, runs: List[Run]) -> List[str]:
    """What keeps the runs from starting in this folder at all (each one line)."""
    todo = [r for r in runs if not is_done(r)]
    if table.runner == "generator":
        sau_yaml = str(table.sau_yaml)
        if not any(r.kind == "defense" for r in todo) or os.path.isfile(sau_yaml):
            return []
        return [f"no plugin config at {sau_yaml}: run from the plugin's checkout or pass a table YAML with sau_yaml"]
    problems = []
    if todo and not os.path.isfile(os.path.join("attack", "prototype.py")):
        problems.append("not a BackdoorBench root (no ./attack/prototype.py): cd to BackdoorBench first")
    if any(r.resume_dir for r in todo) and not os.path.isfile(os.path.join("defense", "sau_plugin.py")):
        problems.append("no ./defense/sau_plugin.py: run 'sau-plugin install-into .' first")
    return problems


def _report(table: Table, sel: Selection, report_dir: str) -> int:
    argv = report_argv(table, sel, report_dir)
    os.makedirs(report_dir, exist_ok=True)
    print(f"[report] {shlex.join(argv)}", flush=True)
    rc = subprocess.run(argv).returncode
    out = os.path.join(report_dir, f"{table.name}.md")
    if rc == 0 and os.path.isfile(out):
        with open(out, encoding="utf-8") as f:
            print(f.read(), end="")
    return 0 if rc == 0 else 1


def _dry_run(table: Table, sel: Selection, runs: List[Run], problems: List[str], args: argparse.Namespace) -> int:
    print(f"# {table.name}: {table.caption}")
    for problem in problems:
        print(f"# warning: {problem}")
    done = 0
    for run in runs:
        why: Optional[str] = None if is_done(run) else blocker(run)
        if is_done(run):
            done += 1
            print(f"# done: {run.id} ({run.marker} exists)")
            continue
        if why:
            print(f"# warning: {run.id}: {why}")
        print(shlex.join(command(run)))
    counts = summary(runs)
    print(f"# {len(runs)} runs ({counts['attacks']} attacks, {counts['defenses']} defenses): "
          f"{len(runs) - done} to run, {done} done")
    if not args.no_report:
        print(shlex.join(report_argv(table, sel, args.report_dir)))
    return 0
