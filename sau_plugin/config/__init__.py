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

# No ``from __future__ import annotations``: the field types must stay typing objects (Python 3.8),
# since coercion and the command line are derived from them.
import dataclasses
import difflib
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Optional, Tuple, Union

from ..core.variants import VARIANT_ALIASES, VARIANTS, canonical_variant, get_variant  # noqa: F401
from ..errors import ConfigError
from .schema import BACKDOORBENCH as BB
from .files import load_yaml_mapping  # noqa: F401  (imported from here by callers)
from .schema import METHOD, PLUGIN, RUN, YAML_ONLY, coerce, plain, setting, setting_of, type_problem

NORM_TYPES = ("L_inf", "L2", "L1", "Reg")  # Reg: no projection, as in the reference
PGD_INITS = ("max", "min", "zero", "random")
# BackdoorBench's names (argparser_opt_scheduler) and none; the reference accepts them all and steps none.
LR_SCHEDULERS = ("CosineAnnealingLR", "StepLR", "MultiStepLR", "CyclicLR", "ReduceLROnPlateau", "none")
EPOCH_SCHEDULERS = ("CosineAnnealingLR", "StepLR", "MultiStepLR")  # those lr_scheduler_stepping epoch can step
# When the lr_scheduler steps: never (the reference: lr stays constant) or once per epoch.
LR_SCHEDULER_STEPPINGS = ("never", "epoch")
OPTIMIZERS = ("adam", "sgd")
LOADERS = ("auto", "backdoorbench", "standalone")
PERTURBATIONS = ("sample", "universal")  # one eps per image (eq. 13) or one per batch, kept (appendix A.4)


def _target_text(text: str) -> str:
    return text.strip().lower()


def _scheduler_name(text: str) -> str:
    return "none" if text.lower() in ("none", "constant", "null") else text


@dataclass(frozen=True)
class SAUConfig:
    """Every SAU setting, each declared once. Defaults are BackdoorBench's ``config/defense/sau/config.yaml``.

    ``kind`` METHOD: a hyperparameter the core reads (``MethodConfig``); RUN: where and how the
    run happens. ``affects``: the setting changes the numbers, so ``--resume`` refuses a change.
    """

    # --- BackdoorBench: run environment -------------------------------------------
    device: str = setting("cuda", "cpu, cuda, cuda:N, cuda:0,1 (one process per GPU) or auto", kind=RUN, source=BB)
    # BackdoorBench: True, which the reference ignores; bf16 is opt-in (README: Configuration)
    amp: bool = setting(False, "bf16/fp16 autocast where the hardware supports it", kind=METHOD, source=BB, flag="bool")
    pin_memory: bool = setting(True, "accepted for compatibility", kind=RUN, source=BB, flag="bool", short=("-pm",))
    non_blocking: bool = setting(True, "accepted for compatibility", kind=RUN, source=BB, flag="bool", short=("-nb",))
    prefetch: bool = setting(False, "accepted for compatibility", kind=RUN, source=BB, flag="bool", short=("-pf",))
    checkpoint_load: Optional[str] = setting(None, "accepted for compatibility (use --resume)", kind=RUN, source=BB)
    checkpoint_save: Optional[str] = setting(None, "checkpoint folder (default <output>/checkpoint)", kind=RUN,
                                             source=BB)
    log: Optional[str] = setting(None, "log folder (default <output>/log)", kind=RUN, source=BB)
    dataset_path: str = setting("./data", "accepted for compatibility; data is found from the attack result",
                                kind=RUN, source=BB)
    dataset: str = setting("cifar10", "mnist, cifar10, cifar100, gtsrb, tiny (default: the one the attack result "
                           "names; without --yaml_path, that dataset's shipped YAML)", kind=RUN, source=BB,
                           affects=True)
    result_file: Optional[str] = setting(None, "attack folder under --record_dir", kind=RUN, source=BB)
    yaml_path: Optional[str] = setting(None, "defaults, e.g. defense_configs/sau/cifar10.yaml (default: the plugin's "
                                       "YAML for the dataset, else its config.yaml)", kind=RUN, source=BB)
    # --- BackdoorBench: training ----------------------------------------------------
    epochs: int = setting(100, "unlearning epochs when --n_rounds is not given", kind=RUN, source=BB)
    batch_size: int = setting(256, "clean samples per batch", kind=METHOD, source=BB)
    num_workers: int = setting(4, "accepted for compatibility", kind=RUN, source=BB, cli_type=float)
    model: str = setting("preactresnet18", "informational: the attack result names the model", kind=RUN, source=BB)
    lr: float = setting(1e-4, "learning rate of the purified model", kind=METHOD, source=BB)
    lr_scheduler: str = setting("CosineAnnealingLR", "CosineAnnealingLR, StepLR, MultiStepLR, CyclicLR, "
                                "ReduceLROnPlateau or none; as in the reference, never stepped (constant lr) unless "
                                "--lr_scheduler_stepping epoch", kind=METHOD, source=BB, normalize=_scheduler_name)
    steplr_stepsize: Optional[int] = setting(None, "StepLR: epochs per step", kind=METHOD, source=BB)
    steplr_gamma: Optional[float] = setting(None, "StepLR / MultiStepLR: lr factor per step", kind=METHOD, source=BB)
    steplr_milestones: Optional[Tuple[int, ...]] = setting(None, "MultiStepLR: epochs at which lr steps",
                                                           kind=METHOD, source=BB, nargs="+")
    cos_t_max: Optional[int] = setting(None, "CosineAnnealingLR period in epochs (default n_rounds)", kind=METHOD,
                                       source=YAML_ONLY)
    lr_scheduler_stepping: str = setting("never", "never (default, as the reference: constant lr) or epoch (step "
                                         "--lr_scheduler once per epoch; cosine over n_rounds)", kind=METHOD,
                                         source=PLUGIN, choices=LR_SCHEDULER_STEPPINGS, normalize=str.lower)
    client_optimizer: str = setting("adam", "adam or sgd", kind=METHOD, source=BB, normalize=str.lower)
    sgd_momentum: float = setting(0.9, "momentum of sgd", kind=METHOD, source=BB)
    wd: float = setting(0.0, "weight decay", kind=METHOD, source=BB)
    adam_betas: Tuple[float, ...] = setting((0.9, 0.999), "Adam's betas", kind=METHOD, source=YAML_ONLY)
    frequency_save: int = setting(0, "accepted for compatibility (a checkpoint is kept every epoch)", kind=RUN,
                                  source=BB)
    random_seed: int = setting(0, "seed of the clean subset, shuffling and PGD", kind=METHOD, source=BB)
    optim: str = setting("Adam", "accepted for compatibility (client_optimizer chooses)", kind=RUN, source=BB)
    # --- BackdoorBench: SAU ------------------------------------------------------------
    ratio: float = setting(0.05, "fraction of the clean training set used", kind=RUN, source=BB, affects=True)
    index: Optional[str] = setting(None, "text file of clean training indices (overrides --ratio)", kind=RUN,
                                   source=BB)
    n_rounds: int = setting(100, "unlearning epochs", kind=METHOD, source=BB)
    outer_steps: int = setting(1, "outer (model) updates per batch", kind=METHOD, source=BB)
    lmd_1: float = setting(1.0, "weight of L_cl", kind=METHOD, source=BB)
    lmd_2: float = setting(0.0, "weight of L_at (0: off)", kind=METHOD, source=BB)
    lmd_3: float = setting(1.0, "weight of L_sar", kind=METHOD, source=BB)
    beta_1: float = setting(0.01, "weight of L_adv", kind=METHOD, source=BB)
    beta_2: float = setting(1.0, "weight of L_share", kind=METHOD, source=BB)
    trigger_norm: float = setting(0.2, "perturbation bound", kind=METHOD, source=BB)
    pgd_init: str = setting("max", "zero, random, max or min", kind=METHOD, source=BB)
    norm_type: str = setting("L_inf", "L_inf, L2, L1 or Reg (no projection)", kind=METHOD, source=BB)
    adv_lr: float = setting(0.2, "PGD step size", kind=METHOD, source=BB)
    adv_steps: int = setting(5, "PGD steps", kind=METHOD, source=BB)
    train_mode: bool = setting(False, "BatchNorm in train mode during the outer step", kind=METHOD, source=BB,
                               flag="switch")
    # --- plugin: beyond the paper (opt-in; README: Small clean sets) ---------------------------------
    lmd_kd: float = setting(0.0, "weight of L_kd, distillation from the backdoored model's soft predictions on the clean "
                            "batch, added to eq. 13 (0: off, the paper's objective)", kind=METHOD, source=PLUGIN)
    kd_temperature: float = setting(2.0, "temperature T of L_kd", kind=METHOD, source=PLUGIN)
    # --- plugin --------------------------------------------------------------------------
    variant: str = setting("sau", f"{', '.join(VARIANTS)}: SAU (A+B), vanilla adversarial training (C+D), "
                           "fine-tuning, and the paper's ablations A+D and C+B (Table 5)", kind=METHOD,
                           source=PLUGIN, normalize=canonical_variant)
    perturbation: str = setting("sample", "sample (one perturbation per image, eq. 13) or universal (one perturbation "
                                "broadcast over the batch and kept across batches and epochs, appendix A.4)",
                                kind=METHOD, source=PLUGIN, choices=PERTURBATIONS, normalize=str.lower)
    target_label: Optional[str] = setting(None, "targeted shared perturbation (appendix A.5): a class index K, or "
                                          "estimate (the class the backdoored model most often predicts on shared "
                                          "adversarial examples of the clean set; logged and in sau_result.json); "
                                          "default: untargeted", kind=METHOD, source=PLUGIN, normalize=_target_text)
    risk_every: int = setting(0, "every K epochs (and before unlearning), adversarial, shared and sub-adversarial "
                              "risks on the poisoned test set's clean images into <name>_risk_df.csv and "
                              "<name>_risk_plots.png (paper Fig. 4, Prop. 3); 0: off", kind=RUN, source=PLUGIN)
    amsgrad: bool = setting(True, "Adam's amsgrad (BackdoorBench's Adam uses it)", kind=METHOD, source=YAML_ONLY)
    compile: bool = setting(False, "torch.compile the models (torch >= 2.0)", kind=RUN, source=PLUGIN, flag="switch")
    cpu_heap_reuse: bool = setting(True, "CPU: keep freed activation memory in the heap instead of page-faulting it "
                                   "anew every batch (glibc; default true; no effect on results)", kind=RUN,
                                   source=PLUGIN, flag="bool")
    loader: str = setting("auto", "who re-reads the clean data: auto (BackdoorBench's own loader when it imports, else "
                          "the plugin's), backdoorbench or standalone", kind=RUN, source=PLUGIN,
                          choices=LOADERS)
    trust_pickle: bool = setting(False, "load attack_result.pt with weights_only=False (runs any code in it)",
                                 kind=RUN, source=PLUGIN, flag="switch")
    record_dir: str = setting("record", "folder holding the attack folders (default: record)", kind=RUN,
                              source=PLUGIN)
    defense_name: str = setting("sau", "output folder and file prefix (default: sau)", kind=RUN, source=PLUGIN)
    resume: bool = setting(False, "continue an interrupted run from checkpoint/last.pt", kind=RUN, source=PLUGIN, flag="switch")
    overwrite: bool = setting(False, "replace an existing defense output", kind=RUN, source=PLUGIN, flag="switch")

    def __post_init__(self) -> None:
        if isinstance(self.target_label, int) and not isinstance(self.target_label, bool):  # YAML: target_label: 3
            object.__setattr__(self, "target_label", str(self.target_label))
        for f in fields(self):  # aliases and case, also for keyword arguments: SAUConfig(variant="A+B")
            normalize, value = setting_of(f).normalize, getattr(self, f.name)
            if normalize is not None and isinstance(value, str):
                object.__setattr__(self, f.name, normalize(value))
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
        return cls(**_coerced(cls, values))

    @classmethod
    def from_yaml(cls, path: Union[str, Path], overrides: Optional[Mapping[str, Any]] = None) -> "SAUConfig":
        """YAML defaults with ``overrides`` (e.g. command-line values that are not None) on top."""
        values = load_yaml_mapping(path)
        values.update({k: v for k, v in (overrides or {}).items() if v is not None})
        values.setdefault("yaml_path", str(path))
        return cls.from_mapping(values, source=str(path))

    def replace(self, **changes: Any) -> "SAUConfig":
        """A validated copy with ``changes`` applied (the original is never mutated)."""
        return dataclasses.replace(self, **_coerced(type(self), changes))

    def to_dict(self) -> dict:
        return {f.name: plain(getattr(self, f.name)) for f in fields(self)}

    def fingerprint(self) -> dict:
        """The settings that change the numbers: a resumed run must have the same."""
        return {f.name: plain(getattr(self, f.name)) for f in fields(self) if setting_of(f).affects}

    def method(self) -> "MethodConfig":
        """The method's hyperparameters only: what the core reads."""
        return MethodConfig(**{f.name: getattr(self, f.name) for f in fields(MethodConfig)})

    # ---- derived --------------------------------------------------------------------------
    @property
    def inner(self) -> Optional[str]:
        """Inner maximisation of the variant: 'shared' (A), 'pgd' (C) or None (FT)."""
        return get_variant(self.variant).inner

    @property
    def outer(self) -> str:
        """Outer minimisation of the variant: 'sar' (B), 'at' (D) or 'ft'."""
        return get_variant(self.variant).outer


# ---- validation -------------------------------------------------------------------------------

def _coerced(cls: type, values: Mapping[str, Any]) -> dict:
    by_name = {f.name: f for f in fields(cls)}
    return {k: coerce(by_name[k], v) if k in by_name else v for k, v in values.items()}


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def _validate(c: SAUConfig) -> None:
    for f in fields(c):
        problem = type_problem(f, getattr(c, f.name))
        _check(problem is None, problem or "")

    _check(c.norm_type in NORM_TYPES, f"norm_type must be one of {', '.join(NORM_TYPES)}; got {c.norm_type!r}")
    _check(c.pgd_init in PGD_INITS, f"pgd_init must be one of {', '.join(PGD_INITS)}; got {c.pgd_init!r}")
    _check(c.trigger_norm > 0, f"trigger_norm (perturbation bound) must be > 0; got {c.trigger_norm}")
    _check(c.adv_lr > 0, f"adv_lr (PGD step size) must be > 0; got {c.adv_lr}")
    _check(c.kd_temperature > 0, f"kd_temperature must be > 0; got {c.kd_temperature}")
    _check(c.adv_steps >= 1, f"adv_steps (PGD steps) must be >= 1; got {c.adv_steps}")
    for key in ("lmd_1", "lmd_2", "lmd_3", "lmd_kd", "beta_1", "beta_2", "wd"):
        _check(getattr(c, key) >= 0, f"{key} must be >= 0; got {getattr(c, key)}")
    _check(0 < c.ratio <= 1, f"ratio (fraction of the clean training set) must be in (0, 1]; got {c.ratio}")
    _check(c.lr > 0, f"lr must be > 0; got {c.lr}")
    _check(c.batch_size >= 1, f"batch_size must be >= 1; got {c.batch_size}")
    _check(c.n_rounds >= 0, f"n_rounds (unlearning epochs) must be >= 0; got {c.n_rounds}")
    _check(c.outer_steps >= 1, f"outer_steps must be >= 1; got {c.outer_steps}")
    _check(isinstance(c.num_workers, int) and c.num_workers >= 0, f"num_workers must be an integer >= 0; got {c.num_workers!r}")
    _check(c.variant in VARIANTS, f"variant must be one of {', '.join(VARIANTS)}; got {c.variant!r}")
    _check(c.perturbation in PERTURBATIONS,
           f"perturbation must be one of {', '.join(PERTURBATIONS)}; got {c.perturbation!r}")
    _check(c.target_label is None or c.target_label == "estimate" or c.target_label.isdigit(),
           f"target_label must be a class index (0, 1, ...) or 'estimate'; got {c.target_label!r}")
    _check(c.risk_every >= 0, f"risk_every must be >= 0 (0: off); got {c.risk_every}")
    inner = get_variant(c.variant).inner if c.variant in VARIANTS else None
    _check(c.target_label is None or (inner or "").startswith("shared"),
           f"target_label applies to the shared inner maximisation (A); variant {c.variant!r} has "
           f"{inner or 'no inner attack'}: use variant sau, a+d or sau_targeted, or drop target_label")
    _check(not (c.variant == "sau_targeted" and c.target_label is None),
           "variant sau_targeted needs target_label: a class index, or 'estimate'")
    _check(c.perturbation == "sample" or inner is not None,
           f"perturbation universal needs an inner attack; variant {c.variant!r} has none")
    _check(not (c.target_label is not None and (c.perturbation == "universal" or c.variant == "sau_universal")),
           "a targeted universal perturbation is not implemented: use target_label with perturbation sample, "
           "or a universal perturbation without target_label")
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
           f"device must be 'cpu', 'cuda', 'cuda:N', a GPU list like 'cuda:0,1', 'mps' or 'auto'; got {c.device!r}")
    _check(isinstance(c.model, str) and c.model != "", f"model must be a model name; got {c.model!r}")
    # Dots are allowed inside (Table 14's folders are named after their bounds, e.g. sau_linf_0.1_0.1), never first
    _check(isinstance(c.defense_name, str) and re.fullmatch(r"[A-Za-z0-9_+-][A-Za-z0-9_.+-]*", c.defense_name) is not None,
           f"defense_name (an output folder name) must be letters, digits, '-', '_', '+' or '.' (not first); "
           f"got {c.defense_name!r}")


def _valid_device(dev: str) -> bool:
    if dev in ("cpu", "cuda", "auto", "mps"):
        return True
    if dev.startswith("cuda:"):
        return all(part.isdigit() for part in dev[5:].split(","))
    return False



def _method_config_init(self) -> None:
    SAUConfig(**{f.name: getattr(self, f.name) for f in fields(self)})  # one set of checks for both


def _method_replace(self, **changes: Any) -> "MethodConfig":
    return dataclasses.replace(self, **_coerced(type(self), changes))


# Derived, not declared: the METHOD-kind fields of SAUConfig, with their declarations.
MethodConfig = dataclasses.make_dataclass(
    "MethodConfig",
    [(f.name, f.type, dataclasses.field(default=f.default, metadata=f.metadata))
     for f in fields(SAUConfig) if setting_of(f).kind == METHOD],
    frozen=True,
    namespace={"__doc__": "The method's hyperparameters (the METHOD-kind settings of SAUConfig); what the core reads.",
               "__post_init__": _method_config_init, "replace": _method_replace, "to_dict": SAUConfig.to_dict,
               "inner": SAUConfig.inner, "outer": SAUConfig.outer, "__module__": __name__},
)
