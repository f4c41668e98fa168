"""Targeted shared perturbation (paper appendix A.5) and a label-free estimate of the target.

With a target label K (y^ in the paper), A.5 bounds the backdoor risk by the targeted
sub-adversarial risk

    R_tsub = 1/|D_-K| sum_i max_{eps_i in S} { 1[x_i in D_s] 1[h(x~_i) = h_bd(x~_i) = K]
                                               + 1[x_i in D_-K \\ D_s] 1[h(x~_i) = K] },

tighter than R_sub (Proposition A.5.2: R_bd <= R_tsub <= R_sub <= R_adv). Its inner
maximisation pushes both models toward K: the targeted form of eq. (10),
L_tadv = -1/2 (CE(h(x~), K) + CE(h_bd(x~), K)), with eq. (11)'s L_share unchanged. The
reference's masks carry over with "fooled" read as "predicts K": a model's CE term acts only
on samples it does not yet send to K, the JS term only on samples not yet shared (both
predict K), and the loop stops once every sample counts as shared.

D_-K: the risk sums only over samples whose true label is not K (a sample of class K sent to
K is classified correctly). Such samples take no part in the objective, count as done for the
early stop, and keep a zero perturbation (x~ = x), so they are never unlearned as adversarial
examples.
"""

from __future__ import annotations

from collections import Counter
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from .losses import js_divergence, masked_sum
from .pgd import PGDResult, SharedPGD

class TargetedObjective(NamedTuple):
    loss: torch.Tensor  # beta_1 * (-L_tadv) + beta_2 * JS, masked: the quantity descended
    shared: torch.Tensor  # both models predict K (or the sample is outside D_-K)
    hit: torch.Tensor  # h(x~) == K
    hit_ref: torch.Tensor  # h_bd(x~) == K


def targeted_objective(logits: torch.Tensor, logits_ref: torch.Tensor, labels: torch.Tensor, target: int,
                       beta_1: float, beta_2: float) -> TargetedObjective:
    """Masked beta_1 * (-L_tadv) + beta_2 * (-L_share) of appendix A.5 (see the module docstring).

    Minimising it lowers CE(., K) of both models (moves them toward K) and their JS divergence.
    """
    n = logits.shape[0]
    k = torch.full_like(labels, target)
    active = labels != target  # D_-K
    pred, pred_ref = logits.argmax(1), logits_ref.argmax(1)
    hit, hit_ref = pred == target, pred_ref == target
    shared = (hit & hit_ref) | ~active
    loss_tadv = (masked_sum(F.cross_entropy(logits, k, reduction="none"), active & ~hit)
                 + masked_sum(F.cross_entropy(logits_ref, k, reduction="none"), active & ~hit_ref)) / (2 * n)
    loss_share = masked_sum(js_divergence(logits, logits_ref), ~shared) / n
    return TargetedObjective(beta_1 * loss_tadv + beta_2 * loss_share, shared, hit, hit_ref)


class TargetedSharedPGD(SharedPGD):
    """Shared PGD toward a target label K (appendix A.5); otherwise as :class:`SharedPGD`.

    Arguments: those of :class:`SharedPGD`, plus ``target`` (int): the label K.

    Examples::
        >>> attack = TargetedSharedPGD(model, backdoored, target=0, bound=0.2, step_size=0.2)
        >>> pert, x_adv, steps = attack(images, labels)
    """

    def __init__(self, model: nn.Module, model_ref: nn.Module, *, target: int, **kwargs):
        super().__init__(model, model_ref, **kwargs)
        self.target = int(target)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, *_, **__) -> PGDResult:
        x01, pert = self._start(images)
        # D_-K: class-K samples start at eps = 0 and stay there (the masked objective gives them a zero gradient)
        pert = pert * (labels != self.target).to(pert.dtype).view(-1, *([1] * (pert.dim() - 1)))
        # appendix A.5: the targeted eq. (10), L_tadv, with eq. (11)'s L_share
        return self._ascend(x01, pert, lambda logits, logits_ref: targeted_objective(
            logits, logits_ref, labels, self.target, self.beta_1, self.beta_2))[0]


class TargetEstimate(NamedTuple):
    target: int
    share: float  # fraction of the counted adversarial predictions that went to ``target``
    counts: dict  # class -> number of shared adversarial examples h_bd sends there


@torch.no_grad()
def _predict(model, x):
    return model(x).argmax(1)


def estimate_target(model_ref: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int = 256,
                    **pgd_kwargs) -> TargetEstimate:
    """The target label guessed from clean data only: the class the backdoored model most
    often predicts on the shared adversarial examples of the clean set (first pass).

    Before unlearning h = h_bd, so shared PGD between two copies of ``model_ref`` finds the
    adversarial examples of h_bd; a backdoored model's easiest wrong class is its target.
    Only examples with h_bd(x~) != y count. ``pgd_kwargs``: those of :class:`SharedPGD`.
    """
    attack = SharedPGD(model_ref, model_ref, **pgd_kwargs)
    counts: Counter = Counter()
    for i in range(0, images.shape[0], batch_size):
        x, y = images[i:i + batch_size], labels[i:i + batch_size]
        pred = _predict(model_ref, attack(x, y).x_adv)
        counts.update(pred[pred != y].tolist())
    if not counts:
        raise ConfigError("no adversarial example found on the clean set; cannot estimate the target label "
                         "(give target_label explicitly, or a larger trigger_norm)")
    target, hits = counts.most_common(1)[0]
    return TargetEstimate(int(target), hits / sum(counts.values()), dict(sorted(counts.items())))
