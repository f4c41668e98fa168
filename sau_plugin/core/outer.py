"""The outer problem of eq. 13: its clean term, the two outer losses (B, D) and the two
ways of running them (joint / split pass).

    lmd_1 * L_cl(x, y) + lmd_2 * L_at(x~, y) + lmd_3 * L_sar(x~, y)     (B, SAU)
    lmd_1 * L_cl(x, y) + (lmd_2 + lmd_3) * L_at(x~, y)                  (D, vanilla AT)

plus, opt-in and beyond the paper, lmd_kd * L_kd(h(x), h_bd(x)) in the clean term (``clean_loss``).

An outer loss is the part on x~ (the clean term is common to every variant): any callable
``loss(logits_adv, labels, x_adv, clean_pred_ref, model_ref, cfg, precision)`` returning a
dict with a scalar ``"loss"`` (other entries are logged as ``train_<key>``).

How the objective is forwarded and backwarded is one documented choice (``OuterPass``):

The purified model's forward here is ``u.forward_outer``: the model itself, or its
``DistributedDataParallel`` wrapper in a run over several processes (``core/parallel.py``).

* :class:`JointPass`: one forward over [x, x~] per outer step, as the reference. Needed
  when BatchNorm uses batch statistics (``train_mode``: the statistics are those of the
  concatenated batch) and for fine-tuning; kept on CUDA, where one large batch keeps the
  GPU better occupied.
* :class:`SplitPass`: with fixed BatchNorm the objective is a sum of a clean term and a term
  on x~ that share no batch statistics, so each half is forwarded and backwarded on its
  own and the gradients add up in ``.grad``: the same gradient as the joint pass up to float
  summation order. The first clean half runs before the attack, where its logits also give
  h(x) for the masks (one forward fewer per batch), and two backward passes of B cost less
  than one of 2B: measured faster on CPU (``bench_scripts/speed.py``).

:func:`choose_outer_pass` with ``"auto"`` takes the split pass on CPU with fixed BatchNorm
and an attack, the joint pass otherwise.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from .losses import distillation_loss, sar_loss
from .precision import Precision, upcast

if TYPE_CHECKING:  # pragma: no cover
    from .unlearn import Unlearner

Parts = Dict[str, torch.Tensor]
OUTER_PASSES = ("auto", "joint", "split")


def clean_loss(logits: torch.Tensor, labels: torch.Tensor, cfg,
               teacher_logits: Optional[torch.Tensor] = None) -> Parts:
    """lmd_1 * L_cl(x, y), the clean term of eq. 13 (outer), [+ lmd_kd * L_kd(h(x), h_bd(x))].

    L_kd (``losses.distillation_loss``) is the plugin's opt-in addition (``lmd_kd`` > 0, then
    ``teacher_logits`` = h_bd(x) is needed): with a tiny clean set the cross-entropy on a few hard
    labels drifts h away from h_bd's accurate clean behaviour; matching h_bd's soft predictions on
    the same clean images holds it there, while L_sar on x~ still unlearns the backdoor.
    """
    loss_cl = F.cross_entropy(logits, labels)
    parts = {"loss_cl": loss_cl, "loss": cfg.lmd_1 * loss_cl}
    if cfg.lmd_kd:
        if teacher_logits is None:
            raise ConfigError("lmd_kd > 0 needs the backdoored model's logits on the clean batch (teacher_logits)")
        parts["loss_kd"] = distillation_loss(logits, teacher_logits, cfg.kd_temperature)
        parts["loss"] = parts["loss"] + cfg.lmd_kd * parts["loss_kd"]
    return parts


def teacher_logits(u: "Unlearner", images: torch.Tensor) -> Optional[torch.Tensor]:
    """h_bd(x) for L_kd when ``lmd_kd`` > 0 (one forward of the frozen model), else None."""
    if not u.cfg.lmd_kd:
        return None
    with torch.no_grad(), u.precision.autocast():
        return upcast(u.forward_ref(images))


def adversarial_terms(logits_adv: torch.Tensor, labels: torch.Tensor, x_adv: torch.Tensor,
                      clean_pred_ref: torch.Tensor, model_ref: nn.Module, precision: Precision, *,
                      at_weight: float, lmd_sar: Optional[float]) -> Parts:
    """at_weight * L_at(x~, y) [+ lmd_sar * L_sar(x~, y)], the terms of eq. 13 (outer) on x~.

    ``clean_pred_ref`` = h_bd(x), fixed for the whole run. A sample enters L_sar (eq. 12)
    when the backdoored model's prediction on x~ is wrong and differs from its clean
    prediction (``potential_poison`` in the reference).
    """
    n = logits_adv.shape[0]
    parts: Parts = {}
    loss = logits_adv.new_zeros(())
    if at_weight:
        parts["loss_at"] = F.cross_entropy(logits_adv, labels)
        loss = loss + at_weight * parts["loss_at"]
    if lmd_sar is not None:
        with torch.no_grad(), precision.autocast():
            y_tilde = model_ref(x_adv).argmax(1)  # h_bd(x~)
        potential = (y_tilde != labels) & (y_tilde != clean_pred_ref)
        parts["loss_sar"] = sar_loss(logits_adv, y_tilde, potential) / n
        parts["potential_poison"] = potential.float().mean()
        loss = loss + lmd_sar * parts["loss_sar"]
    parts["loss"] = loss
    return parts


class SARLoss:
    """B: lmd_2 * L_at(x~, y) + lmd_3 * L_sar(x~, y) (SAU's outer minimisation)."""

    name = "sar"

    def __call__(self, logits_adv, labels, x_adv, clean_pred_ref, model_ref, cfg, precision) -> Parts:
        return adversarial_terms(logits_adv, labels, x_adv, clean_pred_ref, model_ref, precision,
                                 at_weight=cfg.lmd_2, lmd_sar=cfg.lmd_3)


class ATLoss:
    """D: (lmd_2 + lmd_3) * L_at(x~, y) (vanilla adversarial training's minimisation)."""

    name = "at"

    def __call__(self, logits_adv, labels, x_adv, clean_pred_ref, model_ref, cfg, precision) -> Parts:
        return adversarial_terms(logits_adv, labels, x_adv, clean_pred_ref, model_ref, precision,
                                 at_weight=cfg.lmd_2 + cfg.lmd_3, lmd_sar=None)


def combine(clean: Parts, adv: Parts) -> Parts:
    return {**clean, **adv, "loss": clean["loss"] + adv["loss"]}


class JointPass:
    """One forward over [x, x~] per outer step (see the module docstring)."""

    name = "joint"

    def before_attack(self, u: "Unlearner", images, labels) -> Tuple[Optional[Parts], Optional[torch.Tensor]]:
        if u.attack is None:
            return None, None
        with torch.no_grad(), u.precision.autocast():
            return None, u.forward(images).argmax(1)  # h(x) for the masks

    def loss_and_backward(self, u: "Unlearner", images, labels, x_adv, clean_pred_ref, step: int,
                          pre: Optional[Parts]) -> Parts:
        u.optimizer.zero_grad(set_to_none=True)
        n = images.shape[0]
        if u.cfg.train_mode:
            u.forward_outer.train()
        try:
            with u.precision.autocast():
                if x_adv is None:  # fine-tuning: clean data only
                    parts = clean_loss(upcast(u.forward_outer(images)), labels, u.cfg, teacher_logits(u, images))
                else:
                    logits, logits_adv = upcast(u.forward_outer(torch.cat([images, x_adv]))).split([n, n])
        finally:
            u.forward_outer.eval()
        if x_adv is not None:
            parts = combine(clean_loss(logits, labels, u.cfg, teacher_logits(u, images)),
                            u.outer_loss(logits_adv, labels, x_adv, clean_pred_ref, u.forward_ref, u.cfg, u.precision))
        u.backward(parts["loss"])
        return parts


class SplitPass:
    """The clean half and the x~ half forwarded and backwarded one by one (see the module
    docstring); needs fixed BatchNorm."""

    name = "split"

    def before_attack(self, u: "Unlearner", images, labels) -> Tuple[Optional[Parts], Optional[torch.Tensor]]:
        u.optimizer.zero_grad(set_to_none=True)
        return self._clean_half(u, images, labels)

    def loss_and_backward(self, u: "Unlearner", images, labels, x_adv, clean_pred_ref, step: int,
                          pre: Optional[Parts]) -> Parts:
        clean = pre
        if step:  # later outer steps: the clean term at the updated parameters
            u.optimizer.zero_grad(set_to_none=True)
            clean, _ = self._clean_half(u, images, labels)
        with u.precision.autocast():
            logits_adv = upcast(u.forward_outer(x_adv))
        adv = u.outer_loss(logits_adv, labels, x_adv, clean_pred_ref, u.forward_ref, u.cfg, u.precision)
        u.backward(adv["loss"])  # the clean half was checked when it was backwarded
        return combine(clean, adv)

    @staticmethod
    def _clean_half(u: "Unlearner", images, labels) -> Tuple[Parts, torch.Tensor]:
        # Under DDP the gradients are averaged once, at the x~ half's backward: none here.
        with u.precision.autocast(), (u.ddp.no_sync() if u.ddp is not None else contextlib.nullcontext()):
            logits = upcast(u.forward_outer(images))
        parts = clean_loss(logits, labels, u.cfg, teacher_logits(u, images))
        u.backward(parts["loss"])
        return {k: v.detach() for k, v in parts.items()}, logits.detach().argmax(1)


def choose_outer_pass(choice: str, *, has_attack: bool, train_mode: bool, device: torch.device):
    """``auto``: split on CPU with fixed BatchNorm and an attack (measured faster there), else joint."""
    if choice not in OUTER_PASSES:
        raise ConfigError(f"outer_pass must be one of {', '.join(OUTER_PASSES)}; got {choice!r}")
    if choice == "split" and (train_mode or not has_attack):
        raise ConfigError("outer_pass 'split' needs fixed BatchNorm and an inner attack "
                          f"(train_mode {train_mode}, attack {'yes' if has_attack else 'none'}); use 'joint' or 'auto'")
    if choice == "auto":
        choice = "split" if has_attack and not train_mode and device.type == "cpu" else "joint"
    return SplitPass() if choice == "split" else JointPass()
