"""``sau-plugin install-into <BackdoorBench root>``: run the plugin like any BackdoorBench defense.

Writes ``defense/sau_plugin.py`` (a launcher: ``python ./defense/sau_plugin.py
--result_file X --yaml_path ./config/defense/sau_plugin/cifar10.yaml --dataset cifar10``,
results in ``record/X/defense/sau_plugin/``) and ``config/defense/sau_plugin/*.yaml``.
Every file written starts with :data:`MARKER`; a file without it is never overwritten.
Nothing of BackdoorBench is changed.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import List

from ..errors import ConfigError, OutputError
from ..fileio import atomic_write_text
from ..config.files import shipped_config

MARKER = "# Written by `sau-plugin install-into`; re-running it updates this file. Delete it to uninstall."
DEFENSE_NAME = "sau_plugin"

LAUNCHER = f'''{MARKER}
"""Shared Adversarial Unlearning (sau_plugin) as a BackdoorBench defense script.

Run from the BackdoorBench root, like the other defenses:
    python ./defense/sau_plugin.py --result_file <attack folder> --yaml_path ./config/defense/sau_plugin/cifar10.yaml --dataset cifar10
Results go to record/<attack folder>/defense/{DEFENSE_NAME}/. Flags: python ./defense/sau_plugin.py --help
"""
import os
import sys

if __name__ == "__main__":
    # Run as `python -m sau_plugin`: that puts the working folder (the BackdoorBench root) on Python's
    # path, so BackdoorBench's own loader can be imported, and finds the installed package rather than
    # this file of the same name. exec: the run replaces this process, so signals reach it directly.
    os.execv(sys.executable, [sys.executable, "-m", "sau_plugin", "defend", "--defense_name", "{DEFENSE_NAME}",
                              *sys.argv[1:]])
'''


def _looks_like_backdoorbench(root: Path) -> bool:
    return (root / "defense").is_dir() and (root / "utils" / "save_load_attack.py").is_file()


def _ours(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.readline().rstrip("\n") == MARKER
    except OSError:
        return False


BACKDOORBENCH_CONFIGS = ("config.yaml", "cifar10.yaml", "cifar100.yaml", "gtsrb.yaml", "tiny.yaml")


def install_into(root: Path | str) -> List[Path]:
    """Write the launcher and YAML configs into BackdoorBench checkout ``root``; returns the paths."""
    root = Path(root)
    if not _looks_like_backdoorbench(root):
        raise ConfigError(f"{str(root)!r} does not look like a BackdoorBench checkout (expected defense/ and "
                          f"utils/save_load_attack.py); pass the folder you run BackdoorBench's scripts from")
    files = {root / "defense" / f"{DEFENSE_NAME}.py": LAUNCHER}
    for name in BACKDOORBENCH_CONFIGS:  # the offline demo's YAML has no place in a BackdoorBench checkout
        src = shipped_config(name)
        files[root / "config" / "defense" / DEFENSE_NAME / name] = f"{MARKER}\n{src.read_text()}"
    foreign = [str(p) for p in files if p.exists() and not _ours(p)]
    if foreign:
        raise OutputError(f"refusing to overwrite file(s) not written by sau-plugin: {', '.join(foreign)}; "
                          f"move them away first")
    for path, text in files.items():
        atomic_write_text(path, text)
    return list(files)


def _cli(args: argparse.Namespace) -> int:
    for path in install_into(args.root):
        print(f"wrote {path}")
    print(f"run: cd {args.root} && python ./defense/{DEFENSE_NAME}.py --result_file <attack folder> "
          f"--yaml_path ./config/defense/{DEFENSE_NAME}/cifar10.yaml --dataset cifar10")
    return 0


def add_cli(subparsers) -> None:
    p = subparsers.add_parser("install-into", help="add a sau_plugin defense script and configs to a BackdoorBench checkout",
                              description=__doc__.splitlines()[0])
    p.add_argument("root", help="BackdoorBench root (holds defense/, config/, utils/, record/)")
    p.set_defaults(func=_cli)
