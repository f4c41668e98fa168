"""``sau-plugin demo``: the whole job, offline, on a CPU, from nothing.

    sau-plugin demo [--attack badnet] [--epochs N] [--record_dir sau_demo/record]

1. attack: build the MNIST data and a backdoored record folder with the generator
   (``demo/attack.py``), or reuse the one the same settings produced before;
2. defend: run SAU on it through the same record reader and result writer that
   BackdoorBench users get (``sau_plugin.run.run_defense``), with the
   demo's settings from ``defense_configs/sau/demo_mnist.yaml``;
3. report: No defense vs SAU (ACC, ASR, R-ACC, DER, wall time), the time of each
   phase, and the files written.

``--epochs`` is the number of SAU epochs (``n_rounds``), as for ``sau-plugin defend``;
``--attack_epochs`` and ``--width`` shrink the attack for quick checks.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import torch

from ..config.files import shipped_config
from ..config import SAUConfig
from ..run import DefenseOutcome, run_defense
from .attack import DEFAULT_RECORD_DIR, AttackOutcome, AttackSettings, add_attack_arguments, generate, settings_from_args

DEMO_YAML = shipped_config("demo_mnist.yaml")


@dataclass
class DemoResult:
    attack: AttackOutcome
    defense: DefenseOutcome
    config: SAUConfig
    phases: Dict[str, float]  # wall seconds: attack, sau, and the defense's own phases as sau/<name>


def sau_config(attack_folder: Path, *, epochs: Optional[int] = None, device: Optional[str] = None,
               yaml_path: Path = DEMO_YAML) -> SAUConfig:
    """The demo's SAU settings (YAML) pointed at ``attack_folder``; CUDA when available."""
    overrides = {
        "result_file": attack_folder.name,
        "record_dir": str(attack_folder.parent),
        "dataset": "mnist",
        "device": device or ("cuda" if torch.cuda.is_available() else "cpu"),
        "n_rounds": epochs,  # None keeps the YAML's
        "overwrite": True,  # the demo may run again on the same record
    }
    return SAUConfig.from_yaml(yaml_path, overrides)


def demo(settings: AttackSettings, record_dir: Path | str = DEFAULT_RECORD_DIR, *, epochs: Optional[int] = None,
         device: Optional[str] = None, progress: bool = True) -> DemoResult:
    """Attack (or reuse), then SAU through the same run as ``sau-plugin defend``."""
    t0 = time.perf_counter()
    attack = generate(settings, record_dir, progress=progress)
    attack_s = time.perf_counter() - t0
    cfg = sau_config(attack.folder, epochs=epochs, device=device)
    t0 = time.perf_counter()
    outcome = run_defense(cfg, progress=progress)
    sau_s = time.perf_counter() - t0
    phases = {"attack": attack_s, "sau": sau_s, **{f"sau/{k}": float(v) for k, v in outcome.timings.items()}}
    return DemoResult(attack, outcome, cfg, phases)


def format_table(before: Dict[str, float], after: Dict[str, float], der: float, attack_s: float,
                 defense_s: float) -> str:
    """No defense vs SAU in percent (DER as the paper's eq. 14), with wall times."""
    head = f"{'':<12}{'ACC':>8}{'ASR':>8}{'R-ACC':>8}{'DER':>8}{'wall time':>12}"
    rows = [head, "-" * len(head)]
    for name, m, d, t in (("No defense", before, None, attack_s), ("SAU", after, der, defense_s)):
        der_text = "-" if d is None else f"{d:.2f}"
        rows.append(f"{name:<12}{100 * m['test_acc']:>8.2f}{100 * m['test_asr']:>8.2f}{100 * m['test_ra']:>8.2f}"
                    f"{der_text:>8}{t:>10.1f} s")
    return "\n".join(rows)


def report(result: DemoResult) -> str:
    a, d = result.attack, result.defense
    files: List[str] = [str(a.folder / "attack_result.pt"), str(a.folder / "attack_df_summary.csv")]
    files += [str(f) for f in d.files]
    lines = [
        format_table(d.before, d.after, d.der, a.train_time_s, result.phases["sau"]),
        "No defense: the backdoored model (its wall time: training it" + (", in an earlier run)" if a.reused else ")"),
        "",
        "time per phase: " + ", ".join(f"{k} {v:.1f} s" for k, v in result.phases.items()),
        f"total: {result.phases['attack'] + result.phases['sau']:.1f} s",
        "",
        f"attack record: {a.folder}",
        f"SAU results:   {d.output_dir}",
        *(f"  {f}" for f in files),
    ]
    return "\n".join(lines)


def _main(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    print(f"[demo] attack {settings.attack} -> SAU ({args.record_dir})", flush=True)
    result = demo(settings, args.record_dir, epochs=args.epochs, device=args.device, progress=not args.no_progress)
    a = result.attack
    print(f"[attack] {a.folder}: " + ("reused" if a.reused else "trained") + f" ({result.phases['attack']:.1f} s)")
    print(f"[sau]    {result.config.n_rounds} epochs on {result.config.device} ({result.phases['sau']:.1f} s)")
    print()
    print(report(result))
    return 0


def add_cli(subparsers) -> None:
    p = subparsers.add_parser("demo", help="offline end-to-end demo: MNIST backdoor attack, then SAU",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_attack_arguments(p)
    p.add_argument("--epochs", type=int, default=None, help=f"SAU epochs (n_rounds; default from {DEMO_YAML.name})")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.set_defaults(func=_main)
