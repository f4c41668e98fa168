"""The shipped YAML files (``defense_configs/sau`` in the repository, package ``sau_plugin.configs``)."""

import importlib.resources
import sys
from pathlib import Path
from typing import Union

from ..errors import ConfigError

# datasets whose YAML ships with the plugin (BackdoorBench's config/defense/sau/<dataset>.yaml)
SHIPPED_DATASET_CONFIGS = ("cifar10", "cifar100", "gtsrb", "tiny")
SHIPPED = SHIPPED_DATASET_CONFIGS + ("config", "demo_mnist")


def _package_dir() -> Path:
    if sys.version_info >= (3, 9):
        return Path(str(importlib.resources.files("sau_plugin.configs")))
    with importlib.resources.path("sau_plugin.configs", "config.yaml") as p:  # Python 3.8
        return Path(p).parent


def shipped_config(name: str) -> Path:
    """The path of a shipped YAML, e.g. ``shipped_config("cifar10.yaml")``."""
    try:
        path = _package_dir() / name
    except (ModuleNotFoundError, TypeError, OSError):  # a source tree without the package mapping
        path = Path(__file__).resolve().parents[2] / "defense_configs" / "sau" / name
    if not path.is_file():
        raise ConfigError(f"the plugin's YAML {name!r} is missing from this installation; reinstall the plugin "
                          f"or pass --yaml_path")
    return path


def dataset_config(dataset: str) -> Path:
    """The shipped YAML for ``dataset``, else the generic ``config.yaml``."""
    return shipped_config(f"{dataset}.yaml" if dataset in SHIPPED_DATASET_CONFIGS else "config.yaml")


def load_yaml_mapping(path: Union[str, Path]) -> dict:
    import yaml  # local: the core never needs it

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"YAML config {str(p)!r} not found; pass --yaml_path pointing to e.g. defense_configs/sau/cifar10.yaml")
    try:
        data = yaml.safe_load(p.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"YAML config {str(p)!r} is not valid YAML ({exc.__class__.__name__}); fix the file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"YAML config {str(p)!r} must be a mapping of key: value, found {type(data).__name__}")
    return dict(data)
