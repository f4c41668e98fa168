"""The SAU method: torch only, no files, no flags (see the paper, eqs. 10-13)."""

from .callbacks import Callback, CallbackList
from .losses import distillation_loss, js_divergence, masked_sum, sar_loss
from .perturbation import PixelSpace, init_perturbation, project
from .pgd import PGD, PGDResult, SharedPGD
from .targeted import TargetedSharedPGD, TargetEstimate, estimate_target, targeted_objective
from .universal import UniversalPGD, UniversalSharedPGD
from .precision import Precision, choose_precision, cpu_supports_bf16
from .parallel import DataParallel, batch_stats_over_group
from .outer import ATLoss, JointPass, SARLoss, SplitPass, adversarial_terms, choose_outer_pass, clean_loss
from .optim import make_optimizer, make_scheduler
from .unlearn import EpochProgress, UnlearnResult, Unlearner, frozen_reference, unlearn
from .variants import VARIANTS, AttackContext, Variant, get_variant, register_variant

__all__ = [
    "js_divergence", "masked_sum", "sar_loss", "distillation_loss", "PixelSpace",
    "init_perturbation", "project", "PGD", "PGDResult",
    "SharedPGD", "Precision", "choose_precision", "cpu_supports_bf16", "UnlearnResult", "Unlearner",
    "make_optimizer", "make_scheduler", "clean_loss", "adversarial_terms", "unlearn", "frozen_reference",
    "SARLoss", "ATLoss", "JointPass", "SplitPass", "choose_outer_pass", "VARIANTS", "Variant", "AttackContext",
    "get_variant", "register_variant", "Callback", "CallbackList", "EpochProgress", "TargetedSharedPGD",
    "TargetEstimate", "estimate_target", "targeted_objective", "UniversalPGD", "UniversalSharedPGD", "DataParallel",
    "batch_stats_over_group",
]
