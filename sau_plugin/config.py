"""One validated configuration object, with BackdoorBench's key names.

``SAUConfig`` holds every key of BackdoorBench's ``config/defense/sau/config.yaml``
(same names, same defaults) plus the plugin's own keys. It is frozen: build it once
(from keyword arguments, a YAML file, or YAML + command line) and pass it around;
``replace`` returns a validated copy when something must change.

Two reference quirks are made explicit here rather than copied silently:

* The reference loops ``n_rounds`` epochs and ignores ``epochs``; so does the
  plugin (``epochs`` is kept for compatibility). The command line maps an explicit
  ``--epochs`` to ``n_rounds`` when ``--n_rounds`` is not given.
* The reference builds the optimizer's ``lr_scheduler`` (CosineAnnealingLR in every
  BackdoorBench YAML) but never steps it, so its learning rate stays at ``lr``. The
  plugin does the same by default: ``lr_scheduler`` is accepted with BackdoorBench's
  values and has no effect unless ``lr_scheduler_stepping: epoch`` asks for the
  schedule to be stepped once per epoch (cosine: T_max = ``cos_t_max`` or ``n_rounds``).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Optional, Tuple

from .core.variants import VARIANT_ALIASES, VARIANTS, canonical_variant, get_variant  # noqa: F401 - re-exported
from .errors import ConfigError

NORM_TYPES = ("L_inf", "L2", "L1", "Reg")  # Reg: no projection, as in the reference
PGD_INITS = ("max", "min", "zero", "random")
# BackdoorBench's names (argparser_opt_scheduler) and none; the reference accepts them all and steps none.
LR_SCHEDULERS = ("CosineAnnealingLR", "StepLR", "MultiStepLR", "CyclicLR", "ReduceLROnPlateau", "none")
EPOCH_SCHEDULERS = ("CosineAnnealingLR", "StepLR", "MultiStepLR")  # those lr_scheduler_stepping epoch can step
# When the lr_scheduler steps: never (the reference: lr stays constant) or once per epoch.
LR_SCHEDULER_STEPPINGS = ("never", "epoch")
OPTIMIZERS = ("adam", "sgd")
LOADERS = ("auto", "backdoorbench", "standalone")


@dataclass(frozen=True)
class SAUConfig:
    """Every SAU setting. Defaults are BackdoorBench's ``config/defense/sau/config.yaml``."""

    # --- BackdoorBench: run environment -------------------------------------------
    device: str = "cuda"
    amp: bool = False  # BackdoorBench: True, which the reference ignores; bf16 is opt-in (README: Configuration)
    pin_memory: bool = True
    non_blocking: bool = True
    prefetch: bool = False
    checkpoint_load: Optional[str] = None
    checkpoint_save: Optional[str] = None
    log: Optional[str] = None
    dataset_path: str = "./data"
    dataset: str = "cifar10"
    result_file: Optional[str] = None
    yaml_path: Optional[str] = None
    # --- BackdoorBench: training ----------------------------------------------------
    epochs: int = 100
    batch_size: int = 256
    num_workers: int = 4
    model: str = "preactresnet18"
    lr: float = 1e-4
    lr_scheduler: str = "CosineAnnealingLR"
    steplr_stepsize: Optional[int] = None
    steplr_gamma: Optional[float] = None
    steplr_milestones: Optional[Tuple[int, ...]] = None
    cos_t_max: Optional[int] = None
    lr_scheduler_stepping: str = "never"  # plugin: "epoch" steps lr_scheduler; the reference never does
    client_optimizer: str = "adam"
    sgd_momentum: float = 0.9
    wd: float = 0.0
    adam_betas: Tuple[float, float] = (0.9, 0.999)
    frequency_save: int = 0
    random_seed: int = 0
    optim: str = "Adam"  # accepted for compatibility; client_optimizer chooses, as in BackdoorBench
    # --- BackdoorBench: SAU ------------------------------------------------------------
    ratio: float = 0.05
    index: Optional[str] = None
    n_rounds: int = 100
    outer_steps: int = 1
    lmd_1: float = 1.0
    lmd_2: float = 0.0
    lmd_3: float = 1.0
    beta_1: float = 0.01
    beta_2: float = 1.0
    trigger_norm: float = 0.2
    pgd_init: str = "max"
    norm_type: str = "L_inf"
    adv_lr: float = 0.2
    adv_steps: int = 5
    train_mode: bool = False
    # --- plugin --------------------------------------------------------------------------
    variant: str = "sau"
    amsgrad: bool = True  # BackdoorBench's Adam uses amsgrad=True
    compile: bool = False
    cpu_heap_reuse: bool = True  # CPU: keep freed activations in the heap (runtime.py, applied by the run layer)
    loader: str = "auto"
    trust_pickle: bool = False
    record_dir: str = "record"
    defense_name: str = "sau"
    resume: bool = False
    overwrite: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.variant, str):  # an alias ("A+B") is stored under the registry's name ("sau")
            object.__setattr__(self, "variant", canonical_variant(self.variant))
        _validate(self)

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, source: str = "config") -> "SAUConfig":
        """Build from a dict (YAML content, argparse namespace); unknown keys are refused."""
        known = {f.name for f in fields(cls)}
        unknown = [k for k in values if k not in known]
        if unknown:
            hints = []
            for k in unknown:
                close = difflib.get_close_matches(k, known, n=1)
                hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ConfigError(
                f"{source}: unknown key(s) {', '.join(hints)}; "
                f"see SAUConfig in sau_plugin/config.py for the accepted keys"
            )
        return cls(**{k: _coerce(k, v) for k, v in values.items()})

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Optional[Mapping[str, Any]] = None) -> "SAUConfig":
        """YAML defaults with ``overrides`` (e.g. command-line values that are not None) on top."""
        values = load_yaml_mapping(path)
        values.update({k: v for k, v in (overrides or {}).items() if v is not None})
        values.setdefault("yaml_path", str(path))
        return cls.from_mapping(values, source=str(path))

    def replace(self, **changes: Any) -> "SAUConfig":
        """A validated copy with ``changes`` applied (the original is never mutated)."""
        return dataclasses.replace(self, **{k: _coerce(k, v) for k, v in changes.items()})

    def to_dict(self) -> dict:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    # ---- derived --------------------------------------------------------------------------
    @property
    def inner(self) -> Optional[str]:
        """Inner maximisation of the variant: 'shared' (A), 'pgd' (C) or None (FT)."""
        return get_variant(self.variant).inner

    @property
    def outer(self) -> str:
        """Outer minimisation of the variant: 'sar' (B), 'at' (D) or 'ft'."""
        return get_variant(self.variant).outer


def load_yaml_mapping(path: str | Path) -> dict:
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


# ---- validation -------------------------------------------------------------------------------

_INT_KEYS = {"epochs", "batch_size", "n_rounds", "outer_steps", "adv_steps", "random_seed", "frequency_save",
             "steplr_stepsize", "cos_t_max"}
_FLOAT_KEYS = {"lr", "sgd_momentum", "wd", "ratio", "lmd_1", "lmd_2", "lmd_3", "beta_1", "beta_2",
               "trigger_norm", "adv_lr", "steplr_gamma"}
_BOOL_KEYS = {"amp", "pin_memory", "non_blocking", "prefetch", "train_mode", "amsgrad", "compile", "cpu_heap_reuse",
              "trust_pickle", "resume", "overwrite"}


def _coerce(key: str, value: Any) -> Any:
    """Normalise values that YAML / argparse hand over in a looser form."""
    if value is None:
        return None
    if key in _BOOL_KEYS and isinstance(value, str):
        low = value.strip().lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if key in _INT_KEYS:
        if isinstance(value, bool):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                raise ConfigError(f"{key} must be an integer, got {value!r}") from None
    if key in _FLOAT_KEYS:
        if isinstance(value, bool):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        if isinstance(value, (int, str)):
            try:
                return float(value)
            except ValueError:
                raise ConfigError(f"{key} must be a number, got {value!r}") from None
    if key == "num_workers" and isinstance(value, float) and value.is_integer():
        return int(value)  # BackdoorBench's argparse declares it float
    if key == "adam_betas":
        return tuple(float(b) for b in value)
    if key == "steplr_milestones":
        return tuple(int(m) for m in value)
    if key == "variant" and isinstance(value, str):
        return canonical_variant(value)
    if key in ("client_optimizer", "lr_scheduler_stepping") and isinstance(value, str):
        return value.lower()
    if key == "lr_scheduler" and isinstance(value, str) and value.lower() in ("none", "constant", "null"):
        return "none"
    return value


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def _validate(c: SAUConfig) -> None:
    for key in _INT_KEYS:
        v = getattr(c, key)
        _check(v is None or (isinstance(v, int) and not isinstance(v, bool)), f"{key} must be an integer, got {v!r}")
    for key in _FLOAT_KEYS:
        v = getattr(c, key)
        _check(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)),
               f"{key} must be a finite number, got {v!r}")
    for key in _BOOL_KEYS:
        _check(isinstance(getattr(c, key), bool), f"{key} must be true or false, got {getattr(c, key)!r}")

    _check(c.norm_type in NORM_TYPES, f"norm_type must be one of {', '.join(NORM_TYPES)}; got {c.norm_type!r}")
    _check(c.pgd_init in PGD_INITS, f"pgd_init must be one of {', '.join(PGD_INITS)}; got {c.pgd_init!r}")
    _check(c.trigger_norm > 0, f"trigger_norm (perturbation bound) must be > 0; got {c.trigger_norm}")
    _check(c.adv_lr > 0, f"adv_lr (PGD step size) must be > 0; got {c.adv_lr}")
    _check(c.adv_steps >= 1, f"adv_steps (PGD steps) must be >= 1; got {c.adv_steps}")
    for key in ("lmd_1", "lmd_2", "lmd_3", "beta_1", "beta_2", "wd"):
        _check(getattr(c, key) >= 0, f"{key} must be >= 0; got {getattr(c, key)}")
    _check(0 < c.ratio <= 1, f"ratio (fraction of the clean training set) must be in (0, 1]; got {c.ratio}")
    _check(c.lr > 0, f"lr must be > 0; got {c.lr}")
    _check(c.batch_size >= 1, f"batch_size must be >= 1; got {c.batch_size}")
    _check(c.n_rounds >= 0, f"n_rounds (unlearning epochs) must be >= 0; got {c.n_rounds}")
    _check(c.outer_steps >= 1, f"outer_steps must be >= 1; got {c.outer_steps}")
    _check(isinstance(c.num_workers, int) and c.num_workers >= 0, f"num_workers must be an integer >= 0; got {c.num_workers!r}")
    _check(c.variant in VARIANTS, f"variant must be one of {', '.join(VARIANTS)}; got {c.variant!r}")
    _check(c.lr_scheduler in LR_SCHEDULERS, f"lr_scheduler must be one of {', '.join(LR_SCHEDULERS)}; got {c.lr_scheduler!r}")
    _check(c.lr_scheduler_stepping in LR_SCHEDULER_STEPPINGS,
           f"lr_scheduler_stepping must be one of {', '.join(LR_SCHEDULER_STEPPINGS)}; got {c.lr_scheduler_stepping!r}")
    if c.lr_scheduler_stepping == "epoch":  # the schedule's settings matter only when it is stepped
        _check(c.lr_scheduler in EPOCH_SCHEDULERS, f"lr_scheduler_stepping epoch steps the lr_scheduler once per "
               f"epoch, which {c.lr_scheduler} is not made for; use {', '.join(EPOCH_SCHEDULERS)} or "
               f"lr_scheduler_stepping never")
        if c.lr_scheduler == "StepLR":
            _check(c.steplr_stepsize is not None and c.steplr_stepsize >= 1 and c.steplr_gamma is not None,
                   "lr_scheduler StepLR needs steplr_stepsize >= 1 and steplr_gamma")
        if c.lr_scheduler == "MultiStepLR":
            _check(bool(c.steplr_milestones) and c.steplr_gamma is not None,
                   "lr_scheduler MultiStepLR needs steplr_milestones and steplr_gamma")
    _check(c.client_optimizer in OPTIMIZERS, f"client_optimizer must be one of {', '.join(OPTIMIZERS)}; got {c.client_optimizer!r}")
    _check(len(c.adam_betas) == 2 and all(0 <= b < 1 for b in c.adam_betas),
           f"adam_betas must be two numbers in [0, 1); got {c.adam_betas!r}")
    _check(c.loader in LOADERS, f"loader must be one of {', '.join(LOADERS)}; got {c.loader!r}")
    _check(isinstance(c.device, str) and _valid_device(c.device),
           f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto'; got {c.device!r}")
    _check(isinstance(c.model, str) and c.model != "", f"model must be a model name; got {c.model!r}")
    _check(isinstance(c.defense_name, str) and re.fullmatch(r"[A-Za-z0-9_+-]+", c.defense_name) is not None,
           f"defense_name (an output folder name) must be letters, digits, '-', '_' or '+'; got {c.defense_name!r}")


def _valid_device(dev: str) -> bool:
    if dev in ("cpu", "cuda", "auto", "mps"):
        return True
    if dev.startswith("cuda:"):
        return all(part.isdigit() for part in dev[5:].split(","))
    return False


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v
