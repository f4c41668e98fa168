"""The SAU method: torch only, no files, no flags (see the paper, eqs. 10-13)."""

from .losses import js_divergence, masked_sum, sar_loss
from .perturbation import PixelSpace, init_perturbation, project
from .pgd import PGD, PGDResult, SharedPGD
from .precision import Precision, choose_precision, cpu_supports_bf16
from .unlearn import (UnlearnResult, Unlearner, adversarial_loss, clean_loss, make_optimizer, make_scheduler, outer_loss,
                      unlearn)

__all__ = [
    "js_divergence", "masked_sum", "sar_loss", "PixelSpace",
    "init_perturbation", "project", "PGD", "PGDResult",
    "SharedPGD", "Precision", "choose_precision", "cpu_supports_bf16", "UnlearnResult", "Unlearner",
    "make_optimizer", "make_scheduler", "clean_loss", "adversarial_loss", "outer_loss", "unlearn",
]
