"""The commands the bench_scripts/*.sh dry runs printed when lib.sh ran them (frozen in
tests/bench/fixtures/lib_sh_dry_runs.txt): the reference the planner is held to."""

from __future__ import annotations

import shlex
from functools import lru_cache
from pathlib import Path
from typing import Dict, List

FIXTURE = Path(__file__).resolve().parents[1] / "bench" / "fixtures" / "lib_sh_dry_runs.txt"


@lru_cache(maxsize=None)
def _sections() -> Dict[str, List[List[str]]]:
    out: Dict[str, List[List[str]]] = {}
    current = None
    for line in FIXTURE.read_text().splitlines():
        if line.startswith("[") and line.endswith("]"):
            current = out.setdefault(line[1:-1], [])
        elif line and not line.startswith("#"):
            current.append(shlex.split(line))
    return out


def frozen_tables() -> List[str]:
    """The tables whose whole dry run is frozen."""
    return [k for k in _sections() if " " not in k]


def script_dry_run(table: str, *args: str) -> List[List[str]]:
    """argv of each command ``bench_scripts/<table>.sh --dry-run ARGS`` printed (the report last)."""
    key = " ".join((table,) + args)
    assert key in _sections(), f"no frozen dry run {key!r} in {FIXTURE.name}"
    return [list(c) for c in _sections()[key]]
