"""Evaluation (paper section 4.1): ACC, ASR and R-ACC, DER (eq. 14), and the adversarial
and shared adversarial risks of a model pair (the quantities of the paper's Figure 4).

Batches are any iterable of tensors: ``(x, y)`` for clean data and
``(x, y_backdoor, y_original)`` for poisoned data; :func:`batches` cuts tensors into
such batches. Losses are averaged over batches, as BackdoorBench does.

Over several processes (``parallel``, a :class:`~sau_plugin.core.parallel.DataParallel`):
each rank evaluates its share of the batches (``batches(..., parallel=p)``: whole batches,
as one process cuts them) and passes ``parallel`` to the evaluation, which sums counts,
losses and batch numbers over ranks: every rank gets the figures of the whole set.
"""

from __future__ import annotations

from typing import Dict, Iterable, Iterator, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .core.parallel import DataParallel
from .core.precision import Precision, upcast


def batches(*tensors: torch.Tensor, batch_size: int = 256, device=None,
            parallel: Optional[DataParallel] = None) -> Iterator[Tuple[torch.Tensor, ...]]:
    """Cut aligned tensors into batches (in order), optionally moving each to ``device``;
    with ``parallel``, only this rank's batches."""
    n = tensors[0].shape[0]
    starts = range(0, n, batch_size) if parallel is None else parallel.batch_starts(n, batch_size)
    for i in starts:
        yield tuple(t[i:i + batch_size] if device is None else t[i:i + batch_size].to(device) for t in tensors)


def _summed(values: List[float], parallel: Optional[DataParallel]) -> List[float]:
    return values if parallel is None else parallel.sum(values)


def _forward(model: nn.Module, x: torch.Tensor, precision: Optional[Precision]) -> torch.Tensor:
    if precision is None:
        return upcast(model(x))
    with precision.autocast():
        return upcast(model(precision.format(x)))


@torch.inference_mode()
def evaluate_clean(model: nn.Module, data: Iterable, precision: Optional[Precision] = None, *,
                   parallel: Optional[DataParallel] = None) -> Dict[str, float]:
    """ACC and mean clean loss in one pass over ``(x, y)`` batches (summed over ranks with ``parallel``)."""
    model.eval()
    correct = total = 0
    loss_sum, n_batches = 0.0, 0
    for x, y, *_ in data:
        logits = _forward(model, x, precision)
        correct += int((logits.argmax(1) == y).sum())
        total += y.shape[0]
        loss_sum += float(F.cross_entropy(logits, y))
        n_batches += 1
    correct, total, loss_sum, n_batches = _summed([correct, total, loss_sum, n_batches], parallel)
    return {"test_acc": correct / max(1, total), "clean_test_loss_avg_over_batch": loss_sum / max(1, n_batches)}


@torch.inference_mode()
def evaluate_backdoor(model: nn.Module, data: Iterable, precision: Optional[Precision] = None, *,
                      parallel: Optional[DataParallel] = None) -> Dict[str, float]:
    """ASR and R-ACC (BackdoorBench's RA) from one pass over ``(x, y_backdoor, y_original)`` batches.

    ASR = fraction predicted as the backdoor label; R-ACC = fraction predicted as the
    true label. The reference runs this set twice (once per label); the logits are the same.
    """
    model.eval()
    hit = recovered = total = 0
    bd_loss = ra_loss = 0.0
    n_batches = 0
    for x, y_bd, y_orig, *_ in data:
        logits = _forward(model, x, precision)
        pred = logits.argmax(1)
        hit += int((pred == y_bd).sum())
        recovered += int((pred == y_orig).sum())
        total += y_bd.shape[0]
        bd_loss += float(F.cross_entropy(logits, y_bd))
        ra_loss += float(F.cross_entropy(logits, y_orig))
        n_batches += 1
    hit, recovered, total, bd_loss, ra_loss, n_batches = _summed([hit, recovered, total, bd_loss, ra_loss, n_batches],
                                                                 parallel)
    n_batches = max(1, n_batches)
    return {
        "test_asr": hit / max(1, total),
        "test_ra": recovered / max(1, total),
        "bd_test_loss_avg_over_batch": bd_loss / n_batches,
        "ra_test_loss_avg_over_batch": ra_loss / n_batches,
    }


def der(acc_before: float, asr_before: float, acc_after: float, asr_after: float) -> float:
    """Defense Effectiveness Rating, eq. (14), in percent; ACC and ASR given as fractions.

    DER = [max(0, dASR) - max(0, dACC) + 1] / 2, dASR = ASR_before - ASR_after,
    dACC = ACC_before - ACC_after.
    """
    d_asr = asr_before - asr_after
    d_acc = acc_before - acc_after
    return 100.0 * (max(0.0, d_asr) - max(0.0, d_acc) + 1.0) / 2.0


def adversarial_risks(model: nn.Module, model_ref: nn.Module, data: Iterable, attack) -> Dict[str, float]:
    """Empirical adversarial risk of ``model`` and shared adversarial risk of the pair.

    ``attack(x, y)`` returns a :class:`~sau_plugin.core.PGDResult` (e.g. a SharedPGD over
    the same two models). adversarial risk = P[h(x~) != y]; shared adversarial risk =
    P[h(x~) = h_bd(x~) != y] (Definition 1).
    """
    model.eval()
    model_ref.eval()
    adv = shared = total = 0
    for x, y, *_ in data:
        x_adv = attack(x, y).x_adv
        with torch.no_grad():
            pred, pred_ref = model(x_adv).argmax(1), model_ref(x_adv).argmax(1)
        wrong = pred != y
        adv += int(wrong.sum())
        shared += int((wrong & (pred == pred_ref)).sum())
        total += y.shape[0]
    return {"adv_risk": adv / max(1, total), "shared_adv_risk": shared / max(1, total)}
