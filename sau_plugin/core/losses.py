"""Per-sample loss terms of SAU (paper eqs. 10-12), in the reference's numerical form."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .precision import upcast


def js_divergence(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """Per-sample Jensen-Shannon divergence JS(p_a, p_b); -JS is L_share, eq. (11).

    Softmax outputs are clamped to >= 1e-8 before the logs, as in the reference:
    JS = 1/2 [p log p + q log q] - 1/2 [p log m + q log m], m = (p + q) / 2.
    """
    p = F.softmax(upcast(logits_a), dim=1).clamp(min=1e-8)
    q = F.softmax(upcast(logits_b), dim=1).clamp(min=1e-8)
    log_m = (0.5 * (p + q)).log()
    js = 0.5 * (p * p.log() + q * q.log()) - 0.5 * (p * log_m + q * log_m)
    return js.sum(dim=1)


def masked_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of ``values`` where ``mask`` holds; masked-out entries contribute exactly 0
    (also to the gradient, and even if they are not finite)."""
    return torch.where(mask, values, torch.zeros_like(values)).sum()


def sar_loss(logits_adv: torch.Tensor, y_tilde: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
    """Sum over ``selected`` samples of L_sar, eq. (12): -log(1 - p_{y~}(x~; theta)).

    ``y_tilde`` is the backdoored model's prediction on x~; ``selected`` marks the
    samples where the indicator 1[y~ != y] (and y~ != h_bd(x)) holds. The reference
    averages two mathematically equal forms for numerical stability, clamping p to
    discard samples already unlearned (p_{y~} < 0.1%):
    ( -log(1e-6 + min(sum_{k != y~} p_k, 0.999)) - log(1 + 1e-6 - max(p_{y~}, 0.001)) ) / 2.
    Divide by the batch size to get the reference's mean.
    """
    p = F.softmax(upcast(logits_adv), dim=1)
    p_y = p.gather(1, y_tilde.view(-1, 1)).squeeze(1)
    p_rest = (p * (1 - F.one_hot(y_tilde, p.shape[1]).to(p))).sum(dim=1)  # sum_{k != y~} p_k
    per_sample = -torch.log(1e-6 + p_rest.clamp(max=0.999)) - torch.log(1 + 1e-6 - p_y.clamp(min=0.001))
    return masked_sum(per_sample, selected) / 2


def distillation_loss(logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """L_kd = T^2 * mean over the batch of KL(softmax(teacher / T) || softmax(logits / T)) (Hinton et al.).

    The plugin's opt-in addition to eq. (13) (``lmd_kd``), not the paper's: the teacher is the
    backdoored model on clean inputs, where it is accurate. T^2 keeps the gradient's scale
    independent of T. Zero, with zero gradient, when the two sets of logits agree.
    """
    t = float(temperature)
    log_p = F.log_softmax(upcast(logits) / t, dim=1)
    log_q = F.log_softmax(upcast(teacher_logits).detach() / t, dim=1)
    return (log_q.exp() * (log_q - log_p)).sum(dim=1).mean() * (t * t)
