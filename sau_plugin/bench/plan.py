"""The planner: a table and the user's selections -> the runs, in order, with their dependencies.

Pure: it reads no file and starts nothing. The commands follow BackdoorBench's README and defaults,
run from its root (tests/bench/fixtures holds the argv the former shell engine ran: the same).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import ConfigError
from .table import BB_ATTACK_NEEDS, Table


@dataclass(frozen=True)
class Run:
    id: str                   # "<folder> (attack)" or "<folder>/defense/<name>"
    kind: str                 # "attack" | "defense"
    argv: Tuple[str, ...]
    cwd: str                  # the directory argv runs in
    marker: str               # the run is done when this file exists (relative to cwd unless absolute)
    log: str
    gpus: int
    cpus: int
    deps: Tuple[str, ...] = ()  # ids of the runs that must succeed first
    resume_dir: Optional[str] = None  # a plugin defense's output folder: if it holds files, rerun with --resume
    needs: Tuple[str, ...] = ()       # files (relative to cwd) that must exist before it can start


@dataclass(frozen=True)
class Selection:
    attacks: Sequence[str] = ()       # empty: all of the table's, in its order
    defenses: Sequence[str] = ()      # empty: all; ["none"]: attacks only
    pratios: Sequence[float] = ()
    attack_args: Sequence[str] = ()   # appended to every attack command
    defense_args: Sequence[str] = ()  # appended to every plugin-defense command
    record_dir: str = "record"
    log_dir: Optional[str] = None     # default bench_logs/<table>
    cwd: str = "."
    python: str = "python"
    device: Optional[str] = None      # default the table's


def ratio_tag(pratio: float) -> str:
    return str(pratio).replace(".", "_")


def _pick(what: str, table: Table, chosen: Sequence[str], available: Sequence[str]) -> List[str]:
    if not chosen:
        return list(available)
    unknown = [c for c in chosen if c not in available]
    if unknown:
        raise ConfigError(f"{table.name} has no {what} {', '.join(map(repr, unknown))} "
                          f"(it has: {', '.join(available)})")
    return list(chosen)


def selected_pratios(table: Table, chosen: Sequence[float]) -> List[Optional[float]]:
    """The ratios to run; ``[None]`` = the generator's per-attack defaults (no --pratio flag)."""
    bad = [p for p in chosen if not 0 < p <= 1]
    if bad:
        raise ConfigError(f"--pratios must lie in (0, 1]; got {', '.join(map(str, bad))}")
    if not table.pratios:  # generator table without fixed ratios: any ratio, else its defaults
        return list(chosen) or [None]
    unknown = [p for p in chosen if p not in table.pratios]
    if unknown:
        raise ConfigError(f"{table.name} has no ratio {', '.join(map(str, unknown))} "
                          f"(it has: {', '.join(map(str, table.pratios))})")
    return list(chosen) or list(table.pratios)


def attack_folder(table: Table, attack: str, pratio: Optional[float]) -> str:
    if table.runner == "generator":
        return attack if pratio is None else f"{attack}_{ratio_tag(pratio)}"
    folder = f"{table.dataset}_{table.model}_{attack}_{ratio_tag(pratio)}"
    return folder + "_all2all" if table.label_trans == "all2all" else folder


def attack_argv(table: Table, sel: Selection, attack: str, pratio: Optional[float], folder: str) -> List[str]:
    device = sel.device or table.device
    if table.runner == "generator":
        argv = [sel.python, "-m", "sau_plugin", "attack", "--attack", attack, "--record_dir", sel.record_dir,
                "--name", folder, "--no_progress"]
        argv += [] if pratio is None else ["--pratio", str(pratio)]
        return argv + list(sel.attack_args)
    argv = [sel.python, f"./attack/{attack}.py", "--yaml_path", f"./config/attack/prototype/{table.dataset}.yaml",
            "--bd_yaml_path", f"./config/attack/{attack}/default.yaml", "--model", table.model,
            "--pratio", str(pratio), "--save_folder_name", folder]
    argv += ["--attack_label_trans", "all2all"] if table.label_trans == "all2all" else []
    argv += list(sel.attack_args)
    return argv + (["--device", device] if device else [])


def defense_argv(table: Table, sel: Selection, name: str, folder: str) -> List[str]:
    defense = table.defenses[name]
    device = sel.device or table.device
    if table.runner == "generator":
        argv = [sel.python, "-m", "sau_plugin", "defend", "--result_file", folder, "--record_dir", sel.record_dir,
                "--yaml_path", str(table.sau_yaml), "--dataset", table.dataset]
        argv += ["--device", device] if device else []
        argv += ["--variant", defense.variant or name, "--defense_name", name]
        return argv + list(defense.args) + list(sel.defense_args)
    common = ["--dataset", table.dataset, "--model", table.model]
    if defense.plugin:
        argv = [sel.python, "./defense/sau_plugin.py", "--result_file", folder,
                "--yaml_path", f"./config/defense/sau_plugin/{table.dataset}.yaml", *common,
                "--defense_name", name, *defense.args, *sel.defense_args]
    else:
        argv = [sel.python, f"./defense/{name}.py", "--result_file", folder,
                "--yaml_path", f"./config/defense/{name}/{table.dataset}.yaml", *common, *defense.args]
    return argv + (["--device", device] if device else [])


def attack_needs(table: Table, attack: str) -> Tuple[str, ...]:
    if table.runner != "backdoorbench":
        return ()
    return tuple(f.format(dataset=table.dataset, model=table.model) for f in BB_ATTACK_NEEDS.get(attack, ()))


def plan(table: Table, sel: Selection = Selection()) -> List[Run]:
    """Every (ratio, attack): its attack run, then each selected defense on it."""
    attacks = _pick("attack", table, sel.attacks, list(table.attacks))
    names = [] if list(sel.defenses) == ["none"] else _pick("defense", table, sel.defenses, list(table.defenses))
    log_dir = sel.log_dir or os.path.join("bench_logs", table.name)
    runs: List[Run] = []
    for pratio in selected_pratios(table, sel.pratios):
        for attack in attacks:
            folder = attack_folder(table, attack, pratio)
            attack_run = Run(id=f"{folder} (attack)", kind="attack",
                             argv=tuple(attack_argv(table, sel, attack, pratio, folder)), cwd=sel.cwd,
                             marker=os.path.join(sel.record_dir, folder, "attack_result.pt"),
                             log=os.path.join(log_dir, f"{folder}.attack.log"), gpus=table.gpus, cpus=table.cpus,
                             needs=attack_needs(table, attack))
            runs.append(attack_run)
            for name in names:
                out = os.path.join(sel.record_dir, folder, "defense", name)
                plugin = table.runner == "generator" or table.defenses[name].plugin
                runs.append(Run(id=f"{folder}/defense/{name}", kind="defense",
                                argv=tuple(defense_argv(table, sel, name, folder)), cwd=sel.cwd,
                                marker=os.path.join(out, "defense_result.pt"),
                                log=os.path.join(log_dir, f"{folder}.{name}.log"), gpus=table.gpus,
                                cpus=table.cpus, deps=(attack_run.id,), resume_dir=out if plugin else None))
    return runs


def report_argv(table: Table, sel: Selection, report_dir: str = "bench_reports", fmt: str = "md") -> List[str]:
    """The report over the whole table (every attack, ratio and defense, whatever was selected)."""
    ratios = list(table.pratios) or [None]
    specs = []
    for pratio in ratios:
        for attack, label in table.attacks.items():
            suffix = f" {pratio * 100:g}%" if len(ratios) > 1 else ""
            specs.append(f"{attack_folder(table, attack, pratio)}={label}{suffix}")
    return [sel.python, "-m", "sau_plugin", "report", "--record_dir", sel.record_dir, "--attacks", *specs,
            "--defenses", *(d.spec for d in table.defenses.values()), "--format", fmt, "--caption", table.caption,
            "--output", os.path.join(report_dir, f"{table.name}.{fmt}"),
            "--leaderboard", os.path.join(report_dir, "leaderboard.csv"),
            "--leaderboard_extras", os.path.join(report_dir, "leaderboard_extras.csv"), *table.report_args]


def summary(runs: Sequence[Run]) -> Dict[str, int]:
    return {"attacks": sum(r.kind == "attack" for r in runs), "defenses": sum(r.kind == "defense" for r in runs)}
