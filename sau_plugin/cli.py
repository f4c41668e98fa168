"""``sau-plugin`` / ``python -m sau_plugin``: one entry point, one subcommand per job.

Each subcommand lives beside the code it drives and registers itself through an
``add_cli(subparsers)`` function that sets ``func``; this module only dispatches and
turns the package's errors into one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import List, Optional

from .errors import SAUError

# subcommand -> module with add_cli(subparsers); imported lazily so that a broken
# optional dependency of one command never blocks the others.
COMMANDS = {
    "defend": "sau_plugin.backdoorbench.defense",
    "install-into": "sau_plugin.backdoorbench.install",
    "attack": "sau_plugin.demo.attack",
    "demo": "sau_plugin.demo.run",
    "report": "sau_plugin.report.cli",
    "bench": "sau_plugin.bench.cli",
}


def build_parser(argv: Optional[List[str]] = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sau-plugin", description="Shared Adversarial Unlearning for BackdoorBench")
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}")
    wanted = argv[0] if argv and argv[0] in COMMANDS else None
    for name, module in COMMANDS.items():
        if wanted is not None and name != wanted:
            sub.add_parser(name)  # listed in --help; only the chosen one is imported
            continue
        try:
            importlib.import_module(module).add_cli(sub)
        except ModuleNotFoundError as exc:
            if not str(exc.name or "").startswith("sau_plugin"):
                raise
            sub.add_parser(name, help="(not available in this build)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except SAUError as exc:
        if os.environ.get("RANK", "0") in ("0", ""):  # in a run over several processes, rank 0 reports (errors are agreed)
            print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
