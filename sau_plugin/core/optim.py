"""The optimizer and learning-rate schedule of the outer minimisation, as BackdoorBench builds them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn as nn

if TYPE_CHECKING:  # the core only reads attributes of the config
    from ..config import SAUConfig


def make_optimizer(model: nn.Module, cfg: "SAUConfig") -> torch.optim.Optimizer:
    """BackdoorBench's ``argparser_opt_scheduler`` choices: Adam (amsgrad) or SGD."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.client_optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.sgd_momentum, weight_decay=cfg.wd)
    return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.adam_betas), weight_decay=cfg.wd, amsgrad=cfg.amsgrad)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: "SAUConfig"):
    """The schedule stepped once per epoch, or None (constant rate).

    None unless ``lr_scheduler_stepping`` is ``epoch``: the reference builds its
    scheduler but never steps it, so its learning rate stays at ``lr``.
    """
    if cfg.lr_scheduler_stepping != "epoch":
        return None
    if cfg.lr_scheduler == "CosineAnnealingLR":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, cfg.cos_t_max or cfg.n_rounds))
    if cfg.lr_scheduler == "StepLR":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.steplr_stepsize, gamma=cfg.steplr_gamma)
    if cfg.lr_scheduler == "MultiStepLR":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, list(cfg.steplr_milestones), cfg.steplr_gamma)
    return None
