"""SAU as a BackdoorBench defense: the ``sau`` class (BackdoorBench's defense interface) and
``sau-plugin defend``. The run itself is :func:`sau_plugin.run.run_defense`."""

import argparse
import logging
from typing import Optional, Tuple

from ..config import SAUConfig, load_yaml_mapping
from ..config.cli import add_arguments, config_from_args
from ..run import DefenseOutcome, run_defense
from ..run.outputs import OutputDir
from .record import AttackRecord, read_attack_result

log = logging.getLogger("sau_plugin")


# ---- BackdoorBench's defense interface --------------------------------------------------------------------------

class sau:  # noqa: N801 - BackdoorBench names a defense class after its script
    """BackdoorBench's defense interface: ``sau(args).defense(result_file)``.

    ``args`` is an argparse namespace built with :meth:`add_arguments`; the YAML at
    ``--yaml_path`` is merged under the values given on the command line.
    """

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.cfg = config_from_args(args)
        self.progress = not getattr(args, "no_progress", False)
        self.log_level = getattr(args, "log_level", None) or "info"
        self.outcome: Optional[DefenseOutcome] = None
        if self.cfg.result_file:
            self.set_result(self.cfg.result_file)

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        add_arguments(parser)

    def set_result(self, result_file: str) -> None:
        """Point at ``record/<result_file>``; folders are created by the run, once inputs are checked."""
        self.cfg = self.cfg.replace(result_file=result_file)
        paths = OutputDir.of(self.cfg)
        self.attack_file, self.save_path = paths.attack_dir, paths.out

    def set_logger(self) -> None:
        """Logging is set up by the run (log/<timestamp>.log, and stderr when progress is on)."""

    def mitigation(self) -> dict:
        self.cfg, record = dataset_from_record(self.args, self.cfg)
        self.outcome = run_defense(self.cfg, progress=self.progress, log_level=self.log_level, record=record)
        return {"model": self.outcome.model}

    def defense(self, result_file: str) -> dict:
        self.set_result(result_file)
        self.set_logger()
        return self.mitigation()


# ---- command line -------------------------------------------------------------------------------------------------

def dataset_from_record(args: argparse.Namespace, cfg: SAUConfig) -> Tuple[SAUConfig, Optional[AttackRecord]]:
    """Without --dataset the attack result names the dataset: read it (once; the run reuses
    it) and rebuild the configuration with that dataset and its YAML."""
    if getattr(args, "dataset", None) is not None or not cfg.result_file:
        return cfg, None
    record = read_attack_result(OutputDir.of(cfg).attack_dir, trust_pickle=cfg.trust_pickle)
    if getattr(args, "yaml_path", None):
        written_for = load_yaml_mapping(args.yaml_path).get("dataset")
        if written_for not in (None, record.clean_data):
            log.warning("%s sets dataset %r, but the attack result was made on %r: using %r with that YAML's other "
                        "values", args.yaml_path, written_for, record.clean_data, record.clean_data)
    return config_from_args(args, dataset=record.clean_data).replace(result_file=cfg.result_file), record


def _cli(args: argparse.Namespace) -> int:
    cfg, record = dataset_from_record(args, config_from_args(args))
    outcome = run_defense(cfg, progress=not args.no_progress, log_level=args.log_level, record=record)
    if outcome.rank:  # one report per run: rank 0's
        return 0
    b, a = outcome.before, outcome.after
    print(f"no defense: ACC {100 * b['test_acc']:.2f} ASR {100 * b['test_asr']:.2f} R-ACC {100 * b['test_ra']:.2f}")
    print(f"{args.defense_name or 'sau'}: ACC {100 * a['test_acc']:.2f} ASR {100 * a['test_asr']:.2f} "
          f"R-ACC {100 * a['test_ra']:.2f} DER {outcome.der:.2f}")
    print(f"results in {outcome.output_dir}")
    return 0


def add_cli(subparsers) -> None:
    p = subparsers.add_parser("defend", help="run SAU on a BackdoorBench attack result",
                              description="Shared Adversarial Unlearning on record/<result_file>/attack_result.pt; "
                                          "writes record/<result_file>/defense/<defense_name>/.")
    add_arguments(p)
    p.set_defaults(func=_cli)
