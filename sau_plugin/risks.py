"""The risks of the paper's bound, measured on a test set (Proposition 3, appendix A.5,
Figure 4): backdoor risk R_bd, adversarial risk R_adv, shared adversarial risk, the
sub-adversarial risk R_sub (eq. 6) and, with a target label K, R_tadv and R_tsub (eqs. 17-18).

All risks are fractions of D_-y^: the clean test samples that have a poisoned version (their
true label is not the backdoor label). D_s: those whose poisoned version the backdoored model
sends to the backdoor label. Per sample,

    adv    = 1[h(x~) != y]
    shared = 1[h(x~) = h_bd(x~) != y]                           (Definition 1)
    sub    = shared on D_s, adv elsewhere                       (eq. 6)
    tadv   = 1[h(x~) = K]
    tsub   = 1[h(x~) = h_bd(x~) = K] on D_s, tadv elsewhere     (A.5)

and each risk's max over eps in S is estimated by the best of the perturbations the given
attacks found (shared PGD, vanilla PGD, targeted shared PGD: every indicator is maximised
over the same candidates). With one candidate set for all, R_tsub <= R_sub <= R_adv and
R_tsub <= R_tadv hold by construction; whether R_bd <= R_sub (R_bd <= R_tsub) holds is the
empirical question: it needs the trigger to lie in S (Assumption 1) and PGD to find
perturbations at least as effective as the trigger.
"""

from __future__ import annotations

from typing import Dict, Iterable, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from .core.precision import upcast

RISK_KEYS = ("risk_bd", "risk_adv", "risk_shared", "risk_sub", "risk_tadv", "risk_tsub")
Candidate = Tuple[torch.Tensor, torch.Tensor]  # (h(x~), h_bd(x~)) predictions for one attack


def risk_chain(y: torch.Tensor, y_bd: torch.Tensor, pred_poisoned: torch.Tensor, pred_ref_poisoned: torch.Tensor,
               candidates: Sequence[Candidate], target: Optional[int] = None) -> Dict[str, float]:
    """The risks (fractions) from predictions on D_-y^ (see the module docstring).

    ``y``: true labels; ``y_bd``: backdoor labels; ``pred_poisoned`` / ``pred_ref_poisoned``:
    h and h_bd on the poisoned images; ``candidates``: (h(x~), h_bd(x~)) per attack.
    ``chain``: whether R_bd <= R_sub <= R_adv; ``tchain`` (with ``target``): R_bd <= R_tsub <= R_sub.
    """
    if not candidates:
        raise ValueError("risk_chain needs at least one candidate perturbation (an attack's predictions)")
    n = max(1, y.shape[0])
    d_s = pred_ref_poisoned == y_bd
    adv = shared = sub = tadv = tsub = torch.zeros_like(y, dtype=torch.bool)
    for pred, pred_ref in candidates:
        a = pred != y
        s = a & (pred == pred_ref)
        adv, shared, sub = adv | a, shared | s, sub | torch.where(d_s, s, a)
        if target is not None:
            t = (pred == target) & (y != target)
            tadv, tsub = tadv | t, tsub | torch.where(d_s, t & (pred_ref == target), t)
    out = {"risk_bd": float((pred_poisoned == y_bd).sum()) / n, "risk_adv": float(adv.sum()) / n,
           "risk_shared": float(shared.sum()) / n, "risk_sub": float(sub.sum()) / n,
           "risk_d_s": float(d_s.sum()) / n}
    out["chain"] = out["risk_bd"] <= out["risk_sub"] <= out["risk_adv"]
    if target is not None:
        out.update(risk_tadv=float(tadv.sum()) / n, risk_tsub=float(tsub.sum()) / n)
        out["tchain"] = out["risk_bd"] <= out["risk_tsub"] <= out["risk_sub"]
    return out


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return upcast(model(x)).argmax(1)


def measure_risks(model: nn.Module, model_ref: nn.Module, batches: Iterable, attacks: Sequence,
                  target: Optional[int] = None) -> Dict[str, float]:
    """:func:`risk_chain` over ``(x_clean, y, x_poisoned, y_bd)`` batches (normalised, aligned:
    row i of the poisoned batch is row i of the clean one with the trigger).

    ``attacks``: callables ``attack(x, y)`` returning an object with ``x_adv`` (e.g.
    :class:`~sau_plugin.core.SharedPGD` and :class:`~sau_plugin.core.PGD` built on the two models).
    """
    model.eval()
    model_ref.eval()
    parts = {"y": [], "y_bd": [], "p": [], "pr": [], "cand": [[] for _ in attacks]}
    for x, y, xp, y_bd in batches:
        parts["y"].append(y)
        parts["y_bd"].append(y_bd)
        parts["p"].append(_predict(model, xp))
        parts["pr"].append(_predict(model_ref, xp))
        for store, attack in zip(parts["cand"], attacks):
            x_adv = attack(x, y).x_adv
            store.append((_predict(model, x_adv), _predict(model_ref, x_adv)))
    cat = torch.cat
    candidates = [(cat([a for a, _ in c]), cat([b for _, b in c])) for c in parts["cand"]]
    return risk_chain(cat(parts["y"]), cat(parts["y_bd"]), cat(parts["p"]), cat(parts["pr"]), candidates, target)
