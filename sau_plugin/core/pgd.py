"""Inner maximisation of SAU (paper eq. 13, constraint): shared PGD, and vanilla PGD.

Variant A of the paper's ablation is :class:`SharedPGD`; variant C is :class:`PGD`.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable, Iterator, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .losses import js_divergence, masked_sum
from .perturbation import PixelSpace, init_perturbation, project
from .precision import Precision, upcast

log = logging.getLogger(__name__)  # DEBUG: per-batch shared PGD diagnostics (pgd_diagnostics)


class PGDResult(NamedTuple):
    pert: torch.Tensor  # eps in pixel space, detached
    x_adv: torch.Tensor  # normalised x~ = normalize(denormalize(x) + eps), detached
    steps: int  # PGD steps actually run (shared PGD stops early)


def shared_masks(pred: torch.Tensor, pred_ref: torch.Tensor, clean_pred: torch.Tensor, clean_pred_ref: torch.Tensor):
    """Per-sample masks of the reference's shared PGD step.

    fooled: h(x~) != h(x); fooled_ref: h_bd(x~) != h_bd(x);
    shared: both fooled and h(x~) == h_bd(x~) (a shared adversarial example, Definition 1,
    with "wrong" measured against each model's clean prediction, as the reference does).
    """
    fooled = pred != clean_pred
    fooled_ref = pred_ref != clean_pred_ref
    return fooled, fooled_ref, fooled & fooled_ref & (pred == pred_ref)


class SharedObjective(NamedTuple):
    loss: torch.Tensor  # beta_1 * loss_adv + beta_2 * loss_share, the quantity descended
    shared: torch.Tensor  # per-sample masks of this step (see shared_masks)
    fooled: torch.Tensor
    fooled_ref: torch.Tensor
    loss_adv: torch.Tensor  # -L_adv, masked
    loss_share: torch.Tensor  # JS = -L_share, masked


def shared_objective(
    logits: torch.Tensor,
    logits_ref: torch.Tensor,
    labels: torch.Tensor,
    clean_pred: torch.Tensor,
    clean_pred_ref: torch.Tensor,
    beta_1: float,
    beta_2: float,
) -> SharedObjective:
    """The quantity shared PGD descends: beta_1 * (-L_adv) + beta_2 * (-L_share), masked.

    eq. (10) L_adv: CE of each model, only on samples it is not fooled on yet, / 2B.
    eq. (11) L_share = -JS: JS only on samples not yet shared, / B.
    """
    n = logits.shape[0]
    fooled, fooled_ref, shared = shared_masks(logits.argmax(1), logits_ref.argmax(1), clean_pred, clean_pred_ref)
    loss_adv = -(
        masked_sum(F.cross_entropy(logits, labels, reduction="none"), ~fooled)
        + masked_sum(F.cross_entropy(logits_ref, labels, reduction="none"), ~fooled_ref)
    ) / (2 * n)
    loss_share = masked_sum(js_divergence(logits, logits_ref), ~shared) / n
    return SharedObjective(beta_1 * loss_adv + beta_2 * loss_share, shared, fooled, fooled_ref, loss_adv, loss_share)


def pgd_diagnostics(obj: SharedObjective, pert: torch.Tensor, steps: int) -> str:
    """The reference's verbose summary of one shared PGD run (masks and losses of the last
    step, norms of the final perturbation, averaged over the batch). Syncs with the device."""
    flat = pert.detach().flatten(1)
    common = obj.fooled & obj.fooled_ref
    return (f"shared PGD: {steps} step(s), batch {flat.shape[0]}; fooled h {int(obj.fooled.sum())}, "
            f"h_bd {int(obj.fooled_ref.sum())}, both {int(common.sum())}, shared {int(obj.shared.sum())}; "
            f"loss adv {obj.loss_adv.item():.4f}, share {obj.loss_share.item():.4f}, total {obj.loss.item():.4f}; "
            f"eps norm (mean) L1 {float(flat.abs().sum(1).mean()):.4f}, L2 {float(flat.norm(dim=1).mean()):.4f}, "
            f"Linf {float(flat.abs().amax(1).mean()):.4f}")


@contextlib.contextmanager
def frozen_parameters(*modules: nn.Module) -> Iterator[None]:
    """Parameters stop requiring grad for the duration: PGD needs d loss / d eps only, and
    autograd then neither computes nor keeps anything for weight gradients."""
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class _PGDBase:
    def __init__(
        self,
        model: nn.Module,
        *,
        bound: float = 0.2,
        norm: str = "L_inf",
        step_size: float = 0.2,
        steps: int = 5,
        init: str = "max",
        mean: Sequence[float] = (0.0,),
        std: Sequence[float] = (1.0,),
        precision: Optional[Precision] = None,
        generator: Optional[torch.Generator] = None,
    ):
        self.model = model
        self.bound, self.norm, self.step_size, self.steps, self.init = bound, norm, step_size, steps, init
        self.space = PixelSpace(mean, std)
        self.precision = precision or Precision(dtype=None, channels_last=False)
        self.generator = generator

    def _start(self, images: torch.Tensor):
        x01 = self.space.denormalize(images).detach()
        pert = init_perturbation(x01, self.init, self.norm, self.bound, self.generator)
        return x01, pert

    def _step(self, pert: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        # Descend the loss (ours is written as a quantity to minimise), then project onto S.
        return project(pert - self.step_size * grad.sign(), self.norm, self.bound)

    def _grad(self, loss: torch.Tensor, pert: torch.Tensor) -> torch.Tensor:
        # Gradient w.r.t. the perturbation only: no parameter gradients are computed.
        if self.precision.dtype is torch.float16:
            loss = loss * 1024.0  # keeps fp16 gradients from underflowing; sign() ignores the scale
        (grad,) = torch.autograd.grad(loss, pert)
        return grad


class SharedPGD(_PGDBase):
    r"""Shared adversarial examples by PGD, SAU's inner maximisation (variant A).

    Wei et al., "Shared Adversarial Unlearning: Backdoor Mitigation by Unlearning
    Shared Adversarial Examples", NeurIPS 2023, eq. (13) inner problem:
    max_{eps in S} beta_1 * L_adv (eq. 10) + beta_2 * L_share (eq. 11).

    Per step, with the reference's masks: the CE of a model is pushed up only on
    samples it still classifies as on clean input, the JS divergence between the two
    models is pushed down only on samples not yet shared (h(x~) = h_bd(x~), both
    changed); the loop stops once every sample is shared.

    Arguments:
        model (nn.Module): model being purified, h (eval mode).
        model_ref (nn.Module): frozen backdoored model, h_bd (eval mode).
        beta_1 (float): weight of L_adv. Default: 0.01.
        beta_2 (float): weight of L_share. Default: 1.
        bound (float): radius of S (``trigger_norm``). Default: 0.2.
        norm (str): 'L_inf', 'L2', 'L1' or 'Reg' (no projection). Default: 'L_inf'.
        step_size (float): PGD step (``adv_lr``). Default: 0.2.
        steps (int): PGD steps (``adv_steps``). Default: 5.
        init (str): 'max', 'min', 'zero' or 'random'. Default: 'max'.
        mean, std: the normalisation the models expect; eps is added in [0, 1] pixel space.
        all_ranks (callable): when the batch is split over processes, ``all_ranks(flag)`` is
            true when ``flag`` is true on every rank (``DataParallel.all``), so the early
            stop is decided over the global batch. Default: None (one process).

    Shape:
        images: (N, C, H, W) normalised; labels: (N,). Returns a :class:`PGDResult`.

    With the ``sau_plugin.core.pgd`` logger at DEBUG, each call logs the reference's
    verbose summary (fooled / both fooled / shared counts, loss terms, eps norms).

    Examples::
        >>> attack = SharedPGD(model, backdoored, mean=(0.4914, 0.4822, 0.4465), std=(0.247, 0.243, 0.261))
        >>> pert, x_adv, steps = attack(images, labels)
    """

    def __init__(self, model: nn.Module, model_ref: nn.Module, *, beta_1: float = 0.01, beta_2: float = 1.0,
                 all_ranks: Optional[Callable[[bool], bool]] = None, **kwargs):
        super().__init__(model, **kwargs)
        self.model_ref = model_ref
        self.beta_1, self.beta_2 = beta_1, beta_2
        self.all_ranks = all_ranks

    def __call__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        clean_pred: Optional[torch.Tensor] = None,
        clean_pred_ref: Optional[torch.Tensor] = None,
    ) -> PGDResult:
        """``clean_pred`` / ``clean_pred_ref``: argmax of h / h_bd on the clean batch, if the
        caller has them (they never change during the steps); computed here otherwise."""
        if clean_pred is None or clean_pred_ref is None:
            with torch.no_grad(), self.precision.autocast():
                if clean_pred is None:
                    clean_pred = self.model(images).argmax(1)
                if clean_pred_ref is None:
                    clean_pred_ref = self.model_ref(images).argmax(1)
        x01, pert = self._start(images)
        # eq. (13), inner problem: beta_1 * L_adv (eq. 10) + beta_2 * L_share (eq. 11), masked
        result, obj = self._ascend(x01, pert, lambda logits, logits_ref: shared_objective(
            logits, logits_ref, labels, clean_pred, clean_pred_ref, self.beta_1, self.beta_2))
        if result.steps and log.isEnabledFor(logging.DEBUG):  # off by default: the summary syncs with the device
            log.debug(pgd_diagnostics(obj, result.pert, result.steps))
        return result

    def _ascend(self, x01: torch.Tensor, pert: torch.Tensor,
                objective: Callable[[torch.Tensor, torch.Tensor], Any]) -> Tuple[PGDResult, Any]:
        """The shared PGD steps from ``pert``, for every form of the objective.

        ``objective(logits, logits_ref)`` gives the quantity descended (``.loss``) and the
        per-sample ``.shared`` mask that ends the loop once it holds everywhere.
        Returns the :class:`PGDResult` and the objective of the last step (None without steps).
        """
        obj, steps = None, 0
        with frozen_parameters(self.model, self.model_ref):
            for steps in range(1, self.steps + 1):
                pert.requires_grad_(True)
                x_adv = self.space.perturb(x01, pert)
                with self.precision.autocast():
                    logits, logits_ref = upcast(self.model(x_adv)), upcast(self.model_ref(x_adv))
                obj = objective(logits, logits_ref)
                if self.all_ranks is not None:  # batch split over processes: stop once the global batch is shared
                    everywhere = self.all_ranks(bool(obj.shared.all()))
                    pert = self._step(pert.detach(), self._grad(obj.loss, pert))
                    if everywhere:
                        break
                    continue
                pert = self._step(pert.detach(), self._grad(obj.loss, pert))
                if bool(obj.shared.all()):  # after the update, as the reference
                    break
        return PGDResult(pert.detach(), self.space.perturb(x01, pert).detach(), steps), obj


class PGD(_PGDBase):
    r"""Vanilla PGD on the purified model only (variant C): max_{eps in S} CE(h(x~), y).

    Same perturbation sets, initialisation and pixel-space plumbing as
    :class:`SharedPGD`; no masks, no early stop.

    Examples::
        >>> pert, x_adv, steps = PGD(model, bound=0.2, step_size=0.2, steps=5)(images, labels)
    """

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, *_, **__) -> PGDResult:
        x01, pert = self._start(images)
        with frozen_parameters(self.model):
            for _ in range(self.steps):
                pert.requires_grad_(True)
                with self.precision.autocast():
                    logits = upcast(self.model(self.space.perturb(x01, pert)))
                loss = -F.cross_entropy(logits, labels)
                pert = self._step(pert.detach(), self._grad(loss, pert))
        return PGDResult(pert.detach(), self.space.perturb(x01, pert).detach(), self.steps)
