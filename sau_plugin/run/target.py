"""``target_label: estimate``: the target of the targeted shared perturbation (appendix A.5),
estimated from the clean subset and the backdoored model only, before unlearning."""

import logging
from typing import Optional, Tuple

import torch
import torch.nn as nn

from ..config import SAUConfig
from ..core import Precision, estimate_target

log = logging.getLogger("sau_plugin")


def resolve_target(cfg: SAUConfig, model_ref: nn.Module, images: torch.Tensor, labels: torch.Tensor, mean, std,
                   precision: Precision) -> Tuple[SAUConfig, Optional[dict]]:
    """The config the Unlearner gets (``target_label`` an integer or None) and what to record in
    sau_result.json (None when untargeted)."""
    if cfg.target_label is None:
        return cfg, None
    if cfg.target_label != "estimate":
        return cfg, {"setting": cfg.target_label, "used": int(cfg.target_label)}
    device = next(model_ref.parameters()).device
    est = estimate_target(model_ref.eval(), images.to(device), labels.to(device), batch_size=cfg.batch_size,
                          bound=cfg.trigger_norm, norm=cfg.norm_type, step_size=cfg.adv_lr, steps=cfg.adv_steps,
                          init=cfg.pgd_init, mean=mean, std=std, precision=precision,
                          generator=torch.Generator().manual_seed(cfg.random_seed))
    log.info("target label estimated: %d (%.1f%% of the backdoored model's adversarial predictions on the clean "
             "subset; counts per class %s)", est.target, 100 * est.share, est.counts)
    info = {"setting": "estimate", "used": est.target, "share": est.share,
            "counts": {str(k): v for k, v in est.counts.items()}}
    return cfg.replace(target_label=str(est.target)), info
