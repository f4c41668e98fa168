"""The command line, derived from SAUConfig's declarations.

Every BackdoorBench-sourced setting becomes a flag of BackdoorBench's ``defense/sau.py``
(same name, same short alias); every plugin setting a flag of the ``sau_plugin`` group;
YAML-only keys get no flag. Every flag defaults to None, so the YAML's value stands unless
the flag is given.
"""

import argparse
from dataclasses import fields
from pathlib import Path
from typing import Optional

from . import SAUConfig, load_yaml_mapping
from .files import dataset_config
from .schema import BACKDOORBENCH, PLUGIN, parse_bool as _parse_bool
from .schema import setting_of, value_type

LOG_LEVELS = ("debug", "info", "warning")
# Options of how a run is shown, not settings of it (not in SAUConfig): passed to run_defense.
DISPLAY_OPTIONS = {
    "--no_progress": dict(action="store_true", help="no progress bars or log lines on stderr"),
    "--log_level": dict(choices=LOG_LEVELS, default="info",
                        help="debug also logs shared PGD's per-batch diagnostics, as the reference prints them in "
                             "verbose mode: samples fooled (h, h_bd, both), shared, the loss terms and the "
                             "perturbation's mean L1 / L2 / L_inf norms (computed only at this level)"),
}


def parse_bool(text: str) -> bool:
    try:
        return _parse_bool(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every flag of BackdoorBench's defense/sau.py plus the plugin's, from the declarations."""
    groups = {BACKDOORBENCH: parser, PLUGIN: parser.add_argument_group("sau_plugin")}
    for f in fields(SAUConfig):
        s = setting_of(f)
        if s.source not in groups:
            continue
        names = (*s.short, f"--{f.name}")
        add = groups[s.source].add_argument
        if s.flag == "switch":
            add(*names, action="store_true", default=None, help=s.help)
        elif s.flag == "bool":
            add(*names, type=parse_bool, help=s.help)
        else:
            t = s.cli_type or value_type(f)
            if s.nargs:  # a list: argparse converts each item
                t = t.__args__[0]
            add(*names, type=t, nargs=s.nargs, choices=s.choices, help=s.help)
    for flag, kwargs in DISPLAY_OPTIONS.items():
        groups[PLUGIN].add_argument(flag, **kwargs)


def config_from_args(args: argparse.Namespace, dataset: Optional[str] = None) -> SAUConfig:
    """YAML defaults under the explicit flags; an explicit --epochs sets n_rounds unless given.

    ``dataset`` (the record's, used when --dataset is absent) sets the dataset and, without
    --yaml_path, picks that dataset's shipped YAML (``config.yaml`` for a dataset without one).
    """
    known = {f.name for f in fields(SAUConfig)}
    values = {k: v for k, v in vars(args).items() if k in known and v is not None}
    if values.get("epochs") is not None and values.get("n_rounds") is None:
        values["n_rounds"] = values["epochs"]
    if dataset is not None and "dataset" not in values:
        values["dataset"] = dataset
    yaml_path = Path(args.yaml_path) if getattr(args, "yaml_path", None) else dataset_config(values.get("dataset"))
    load_yaml_mapping(yaml_path)  # clear error for a missing or broken file before merging
    return SAUConfig.from_yaml(yaml_path, overrides=values)
