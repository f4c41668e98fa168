"""``sau-plugin bench TABLE``: a table's runs as commands (``--dry-run``)."""

from __future__ import annotations

import argparse
import os
import re
import shlex
from typing import List

from ..errors import ConfigError
from .plan import Selection, plan, report_argv, summary
from .table import load_table, shipped_tables


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
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    table = load_table(args.table)
    record_dir = args.record_dir or ("record_cpu" if table.runner == "generator" else "record")
    sel = Selection(attacks=_names(args.attacks), defenses=_names(args.defenses), pratios=_ratios(args.pratios),
                    attack_args=_flags(args.attack_args, "--attack-args"),
                    defense_args=_flags(args.defense_args, "--defense-args"), record_dir=record_dir,
                    log_dir=args.log_dir, cwd=os.getcwd(), python=args.python, device=args.device)
    runs = plan(table, sel)
    if not args.dry_run:
        raise ConfigError("running a table comes with the executors; for now pass --dry-run to list its commands "
                          "(bench_scripts/table*.sh run them)")
    print(f"# {table.name}: {table.caption}")
    done = 0
    for run in runs:
        if os.path.isfile(os.path.join(run.cwd, run.marker)):
            done += 1
            print(f"# done: {run.id} ({run.marker} exists)")
        else:
            print(shlex.join(run.argv))
    counts = summary(runs)
    print(f"# {len(runs)} runs ({counts['attacks']} attacks, {counts['defenses']} defenses): "
          f"{len(runs) - done} to run, {done} done")
    if not args.no_report:
        print(shlex.join(report_argv(table, sel, args.report_dir)))
    return 0
