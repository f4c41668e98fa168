"""A benchmark table as data: the YAML files under ``sau_plugin/bench/tables`` (or a user's own).

Keys (``name`` is the file's stem)::

    caption: str                      printed above the report table
    runner: backdoorbench | generator who makes the attacks: BackdoorBench's attack/<name>.py
                                      (run from a BackdoorBench root) or ``sau-plugin attack``
    dataset: str, model: str
    pratios: [float, ...]             poisoning ratios (optional for the generator: its defaults)
    label_trans: all2one | all2all    BackdoorBench runner only
    attacks: {name: label}            label printed in the report (null: the name)
    defenses: {name: {label, plugin, args, variant}}
        plugin: true                  the SAU plugin under --defense_name <name> (BackdoorBench runner;
                                      every generator-runner defense is a plugin variant)
        args: [str, ...]              extra flags of this defense (SAU variants, ANP's threshold)
        variant: str                  generator runner: the plugin variant (default: <name>), so that
                                      several runs of one variant with other flags sit side by side
    sau_yaml: path                    generator runner: the plugin's config for ``sau-plugin defend``
    device: str                       optional --device of every run that takes one
    resources: {gpus: int, cpus: int} what one run needs
    report_args: [str, ...]           extra flags of the report command
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import yaml

from ..errors import ConfigError

TABLES_DIR = Path(__file__).resolve().parent / "tables"
RUNNERS = ("backdoorbench", "generator")
LABEL_TRANSFORMS = ("all2one", "all2all")
# scripts in BackdoorBench's attack/ and defense/ folders (prototype.py, base.py and helpers left out)
BB_ATTACKS = ("badnet", "blended", "blind", "bpp", "ctrl", "ftrojann", "inputaware", "lc", "lf", "lira",
              "poison_ink", "refool", "sig", "ssba", "trojannn", "wanet")
BB_DEFENSES = ("abl", "ac", "anp", "bnp", "clp", "d-br", "d-st", "dbd", "ep", "fp", "ft-sam", "ft", "i-bau",
               "mcr", "nab", "nad", "nc", "npd", "rnp", "sau", "spectral")
# files BackdoorBench's default attack configs read (see the readme files under its resource/)
BB_ATTACK_NEEDS = {
    "badnet": ("./resource/badnet/trigger_image.png",),
    "blended": ("./resource/blended/hello_kitty.jpeg",),
    "lf": ("./resource/lowFrequency/{dataset}_{model}_0_255.npy",),
    "ssba": ("./resource/ssba/{dataset}_ssba_train_b1.npy", "./resource/ssba/{dataset}_ssba_test_b1.npy"),
}
DEFAULT_RESOURCES = {"backdoorbench": {"gpus": 1, "cpus": 1}, "generator": {"gpus": 0, "cpus": 1}}
KEYS = ("caption", "runner", "dataset", "model", "pratios", "label_trans", "attacks", "defenses", "sau_yaml",
        "device", "resources", "report_args")
DEFENSE_KEYS = ("label", "plugin", "args", "variant")


@dataclass(frozen=True)
class Defense:
    name: str
    label: Optional[str] = None
    plugin: bool = False
    args: Tuple[str, ...] = ()
    variant: Optional[str] = None  # generator runner: the plugin variant when it is not the name

    @property
    def spec(self) -> str:
        """``name`` or ``name=Label``, as the report's --defenses takes it."""
        return self.name if self.label is None else f"{self.name}={self.label}"


@dataclass(frozen=True)
class Table:
    name: str
    caption: str
    runner: str
    dataset: str
    model: str
    attacks: Dict[str, str]
    defenses: Dict[str, Defense]
    pratios: Tuple[float, ...] = ()
    label_trans: str = "all2one"
    sau_yaml: Optional[str] = None
    device: Optional[str] = None
    gpus: int = 1
    cpus: int = 1
    report_args: Tuple[str, ...] = field(default=())


def shipped_tables() -> List[str]:
    return sorted(p.stem for p in TABLES_DIR.glob("*.yaml"))


def load_table(name_or_path: str) -> Table:
    """A shipped table by name (``table2``) or a YAML file by path."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = TABLES_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ConfigError(f"unknown table {name_or_path!r}: pass one of {', '.join(shipped_tables())} "
                              f"or the path of a table YAML")
    if not path.is_file():
        raise ConfigError(f"no table YAML at {path}: pass one of {', '.join(shipped_tables())} or an existing file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    return table_from_dict(path.stem, data, where=str(path))


def table_from_dict(name: str, data: Any, where: str = "table") -> Table:
    """Validate ``data``; every problem is one line of the raised ConfigError."""
    problems: List[str] = []
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of {', '.join(KEYS)}; got {type(data).__name__}")
    problems += [f"unknown key {k!r} (known: {', '.join(KEYS)})" for k in data if k not in KEYS]
    text = {k: _text(data, k, problems, required=k in ("caption", "runner", "dataset", "model"))
            for k in ("caption", "runner", "dataset", "model", "label_trans", "sau_yaml", "device")}
    runner = text["runner"]
    if runner is not None and runner not in RUNNERS:
        problems.append(f"runner must be one of {', '.join(RUNNERS)}; got {runner!r}")
    label_trans = text["label_trans"] or "all2one"
    if label_trans not in LABEL_TRANSFORMS:
        problems.append(f"label_trans must be one of {', '.join(LABEL_TRANSFORMS)}; got {label_trans!r}")
    elif runner == "generator" and label_trans != "all2one":
        problems.append("label_trans: the generator runner makes all-to-all attacks by name (badnet_all2all)")
    pratios = _pratios(data.get("pratios"), problems)
    if runner == "backdoorbench" and data.get("pratios") is None:
        problems.append("pratios: the backdoorbench runner needs a list of poisoning ratios, e.g. [0.1]")
    if runner == "generator" and text["sau_yaml"] is None:
        problems.append("sau_yaml: the generator runner needs the plugin's config path for 'sau-plugin defend'")
    attacks = _attacks(data.get("attacks"), runner, problems)
    defenses = _defenses(data.get("defenses"), runner, problems)
    resources = _resources(data.get("resources"), runner, problems)
    report_args = _args(data.get("report_args"), "report_args", problems)
    if problems:
        raise ConfigError("\n".join(f"{where}: {p}" for p in problems))
    return Table(name=name, caption=text["caption"], runner=runner, dataset=text["dataset"], model=text["model"],
                 attacks=attacks, defenses=defenses, pratios=pratios, label_trans=label_trans,
                 sau_yaml=text["sau_yaml"], device=text["device"], gpus=resources["gpus"], cpus=resources["cpus"],
                 report_args=report_args)


def _text(data: dict, key: str, problems: List[str], required: bool = False) -> Optional[str]:
    value = data.get(key)
    if value is None:
        if required:
            problems.append(f"{key}: missing (a string)")
        return None
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{key}: expected a non-empty string; got {value!r}")
        return None
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _pratios(value: Any, problems: List[str]) -> Tuple[float, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not value:
        problems.append(f"pratios: expected a non-empty list of numbers in (0, 1]; got {value!r}")
        return ()
    bad = [v for v in value if not _is_number(v) or not (0 < v <= 1) or math.isnan(v)]
    if bad:
        problems.append(f"pratios: expected numbers in (0, 1]; got {', '.join(map(repr, bad))}")
        return ()
    return tuple(float(v) for v in value)


def _generator_attacks() -> Tuple[str, ...]:
    from ..demo.poison import ATTACKS  # torch and numpy: only for generator tables
    return tuple(ATTACKS)


def _plugin_variants() -> Tuple[str, ...]:
    from ..core.variants import VARIANTS, VARIANT_ALIASES
    return tuple(VARIANTS) + tuple(VARIANT_ALIASES)


def _attacks(value: Any, runner: Optional[str], problems: List[str]) -> Dict[str, str]:
    if not isinstance(value, dict) or not value:
        problems.append(f"attacks: expected a mapping of attack name to printed label; got {value!r}")
        return {}
    known = BB_ATTACKS if runner == "backdoorbench" else _generator_attacks() if runner == "generator" else None
    out = {}
    for name, label in value.items():
        if known is not None and name not in known:
            where = "BackdoorBench's attack/" if runner == "backdoorbench" else "the plugin's generator"
            problems.append(f"attacks: unknown attack {name!r}; {where} has {', '.join(known)}")
        elif label is not None and not isinstance(label, str):
            problems.append(f"attacks: label of {name!r} must be a string; got {label!r}")
        else:
            out[str(name)] = name if label is None else label
    return out


def _defenses(value: Any, runner: Optional[str], problems: List[str]) -> Dict[str, Defense]:
    if not isinstance(value, dict) or not value:
        problems.append(f"defenses: expected a mapping of defense name to {{label, plugin, args, variant}}; "
                        f"got {value!r}")
        return {}
    out = {}
    for name, entry in value.items():
        entry = {} if entry is None else entry
        if not isinstance(entry, dict):
            problems.append(f"defenses: {name!r} must map to {{label, plugin, args}} or nothing; got {entry!r}")
            continue
        n_before = len(problems)
        problems += [f"defenses: {name!r} has unknown key {k!r} (known: {', '.join(DEFENSE_KEYS)})"
                     for k in entry if k not in DEFENSE_KEYS]
        label, plugin = entry.get("label"), entry.get("plugin", runner == "generator")
        if label is not None and not isinstance(label, str):
            problems.append(f"defenses: label of {name!r} must be a string; got {label!r}")
        if not isinstance(plugin, bool):
            problems.append(f"defenses: plugin of {name!r} must be true or false; got {plugin!r}")
        elif runner == "backdoorbench" and not plugin and name not in BB_DEFENSES:
            problems.append(f"defenses: unknown defense {name!r}: BackdoorBench's defense/ has "
                            f"{', '.join(BB_DEFENSES)}; a SAU plugin run needs 'plugin: true'")
        variant = entry.get("variant")
        if variant is not None and (runner != "generator" or not isinstance(variant, str)):
            problems.append(f"defenses: variant of {name!r} must be a plugin variant's name, for the generator "
                            f"runner only (BackdoorBench plugin runs take --variant in args); got {variant!r}")
        elif runner == "generator" and (variant or name) not in _plugin_variants():
            what = f"variant {variant!r} of {name!r}" if variant else f"defense {name!r}"
            problems.append(f"defenses: unknown {what}: the plugin's variants are {', '.join(_plugin_variants())}")
        args = _args(entry.get("args"), f"defenses: args of {name!r}", problems)
        if len(problems) == n_before:
            out[str(name)] = Defense(str(name), label, plugin, args, variant)
    return out


def _args(value: Any, what: str, problems: List[str]) -> Tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) or _is_number(v) for v in value):
        problems.append(f"{what}: expected a list of flags and values (strings); got {value!r}")
        return ()
    return tuple(str(v) for v in value)


def _resources(value: Any, runner: Optional[str], problems: List[str]) -> Dict[str, int]:
    out = dict(DEFAULT_RESOURCES.get(runner or "", DEFAULT_RESOURCES["backdoorbench"]))
    if value is None:
        return out
    if not isinstance(value, dict):
        problems.append(f"resources: expected a mapping {{gpus: int, cpus: int}}; got {value!r}")
        return out
    for key, amount in value.items():
        if key not in out:
            problems.append(f"resources: unknown key {key!r} (known: gpus, cpus)")
        elif not isinstance(amount, int) or isinstance(amount, bool) or amount < 0:
            problems.append(f"resources: {key} must be a whole number >= 0; got {amount!r}")
        else:
            out[key] = amount
    return out
