"""Outer minimisation of SAU (paper eq. 13) and the epoch loop (paper Algorithm 1).

One mini-batch: inner maximisation (shared PGD, or vanilla PGD for the ablations)
gives x~; then ``outer_steps`` optimizer steps on

    lmd_1 * L_cl(x, y) + lmd_2 * L_at(x~, y) + lmd_3 * L_sar(x~, y)     (eq. 13, outer; B)

or, for the vanilla-AT minimisation (D), with L_sar replaced by L_at, or clean CE
alone for fine-tuning. The model stays in eval mode (fixed BatchNorm statistics)
unless ``train_mode`` is set. Everything here works on tensors and modules; files,
logs and progress bars are the caller's business (``on_epoch_end`` / ``evaluate``).
"""

from __future__ import annotations

import copy as copy_module
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..compat import compiled
from ..errors import NonFiniteLossError
from .losses import sar_loss
from .pgd import PGD, SharedPGD
from .precision import Precision, choose_precision, upcast

if TYPE_CHECKING:  # the core only reads attributes of the config
    from ..config import SAUConfig


@dataclass
class UnlearnResult:
    model: nn.Module
    history: List[Dict[str, float]] = field(default_factory=list)


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


def clean_loss(logits: torch.Tensor, labels: torch.Tensor, cfg: "SAUConfig") -> Dict[str, torch.Tensor]:
    """lmd_1 * L_cl(x, y), the clean term of eq. 13 (outer)."""
    loss_cl = F.cross_entropy(logits, labels)
    return {"loss_cl": loss_cl, "loss": cfg.lmd_1 * loss_cl}


def adversarial_loss(
    logits_adv: torch.Tensor,
    labels: torch.Tensor,
    x_adv: torch.Tensor,
    clean_pred_ref: torch.Tensor,
    model_ref: nn.Module,
    cfg: "SAUConfig",
    precision: Precision,
) -> Dict[str, torch.Tensor]:
    """lmd_2 * L_at(x~, y) + lmd_3 * L_sar(x~, y), the terms of eq. 13 (outer) on x~.

    ``clean_pred_ref`` = h_bd(x), fixed for the whole run. A sample enters L_sar
    (eq. 12) when the backdoored model's prediction on x~ is wrong and differs from
    its clean prediction (``potential_poison`` in the reference).
    """
    n = logits_adv.shape[0]
    parts: Dict[str, torch.Tensor] = {}
    loss = logits_adv.new_zeros(())
    at_weight = cfg.lmd_2 + (cfg.lmd_3 if cfg.outer == "at" else 0.0)
    if at_weight:
        parts["loss_at"] = F.cross_entropy(logits_adv, labels)
        loss = loss + at_weight * parts["loss_at"]
    if cfg.outer == "sar":
        with torch.no_grad(), precision.autocast():
            y_tilde = model_ref(x_adv).argmax(1)  # h_bd(x~)
        potential = (y_tilde != labels) & (y_tilde != clean_pred_ref)
        parts["loss_sar"] = sar_loss(logits_adv, y_tilde, potential) / n
        parts["potential_poison"] = potential.float().mean()
        loss = loss + cfg.lmd_3 * parts["loss_sar"]
    parts["loss"] = loss
    return parts


def outer_loss(
    model: nn.Module,
    model_ref: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    x_adv: Optional[torch.Tensor],
    clean_pred_ref: torch.Tensor,
    cfg: "SAUConfig",
    precision: Precision,
) -> Dict[str, torch.Tensor]:
    """The whole outer objective for one batch (eq. 13, outer), with its parts for logging.

    One forward over [x, x~], as the reference does; this matters for ``train_mode``,
    where BatchNorm's batch statistics are those of the concatenated batch.
    """
    n = images.shape[0]
    if cfg.train_mode:
        model.train()
    try:
        with precision.autocast():
            if x_adv is None:  # fine-tuning: clean data only
                return clean_loss(upcast(model(images)), labels, cfg)
            logits, logits_adv = upcast(model(torch.cat([images, x_adv]))).split(n)
    finally:
        model.eval()
    return _combine(clean_loss(logits, labels, cfg),
                    adversarial_loss(logits_adv, labels, x_adv, clean_pred_ref, model_ref, cfg, precision))


def _combine(clean: Dict[str, torch.Tensor], adv: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return {**clean, **adv, "loss": clean["loss"] + adv["loss"]}


def frozen_reference(model_ref: nn.Module, precision: Precision, *, copy: bool = True) -> nn.Module:
    """h_bd as the loop needs it: eval mode, no gradients, the precision's memory format.

    ``copy=True`` works on a deep copy, so the caller's module keeps its parameters, memory
    format, ``requires_grad`` flags and training mode (cost: one more copy of the model on
    its device). ``copy=False`` converts the given module in place.
    """
    if copy:
        model_ref = copy_module.deepcopy(model_ref)
    model_ref = precision.prepare(model_ref).eval()
    for p in model_ref.parameters():
        p.requires_grad_(False)
    return model_ref


class Unlearner:
    """SAU's epoch loop over a clean subset held as tensors on the device.

    ``model`` (h) is purified in place: its parameters are updated and it is converted to
    the precision's memory format (channels_last); ``fit`` runs it in eval mode (fixed
    BatchNorm unless ``train_mode``) and gives back the training mode it had.
    ``model_ref`` (h_bd) is left as the caller has it: the loop works on a frozen deep copy
    (``copy_ref=False`` freezes and converts the given module in place instead, saving that
    copy's memory). Process-wide speed settings are not touched: see ``sau_plugin.runtime``.

    The frozen model's predictions on the clean subset are computed once per run
    (the subset has no augmentation); the purified model's clean predictions come from
    the forward of the clean loss term, once per batch. ``state_dict`` / ``load_state_dict``
    cover everything needed to resume bit-for-bit: model, optimizer, scheduler, shuffling
    RNG, epoch and history.
    """

    def __init__(
        self,
        model: nn.Module,
        model_ref: nn.Module,
        cfg: "SAUConfig",
        *,
        mean: Sequence[float] = (0.0,),
        std: Sequence[float] = (1.0,),
        precision: Optional[Precision] = None,
        copy_ref: bool = True,
    ):
        self.cfg = cfg
        self.device = next(model.parameters()).device
        self.precision = precision or choose_precision(self.device, cfg.amp)
        self.model = self.precision.prepare(model)
        self.model_ref = frozen_reference(model_ref, self.precision, copy=copy_ref)
        self.forward = compiled(self.model) if cfg.compile else self.model
        self.forward_ref = compiled(self.model_ref) if cfg.compile else self.model_ref
        self.optimizer = make_optimizer(self.model, cfg)
        self.scheduler = make_scheduler(self.optimizer, cfg)
        self.scaler = self.precision.make_scaler()
        self.generator = torch.Generator().manual_seed(cfg.random_seed)
        self.epoch = 0  # epochs completed
        self.history: List[Dict[str, float]] = []
        attack_kwargs = dict(bound=cfg.trigger_norm, norm=cfg.norm_type, step_size=cfg.adv_lr, steps=cfg.adv_steps,
                             init=cfg.pgd_init, mean=mean, std=std, precision=self.precision, generator=self.generator)
        if cfg.inner == "shared":
            self.attack = SharedPGD(self.forward, self.forward_ref, beta_1=cfg.beta_1, beta_2=cfg.beta_2, **attack_kwargs)
        elif cfg.inner == "pgd":
            self.attack = PGD(self.forward, **attack_kwargs)
        else:
            self.attack = None
        self._ref_cache = None
        # The clean and x~ halves of the outer loss forwarded and backwarded one by one (see
        # _split_step) where it was measured faster: on CPU (bench_scripts/speed.py). It needs
        # fixed BatchNorm; on CUDA the joint pass over [x, x~] keeps the GPU better occupied.
        self.split_outer = self.attack is not None and not cfg.train_mode and self.device.type == "cpu"

    # ---- one batch / one epoch -----------------------------------------------------------------
    def step(self, images: torch.Tensor, labels: torch.Tensor, clean_pred_ref: torch.Tensor) -> Dict[str, float]:
        """Inner maximisation then ``outer_steps`` optimizer steps on one batch."""
        if self.split_outer:
            return self._split_step(images, labels, clean_pred_ref)
        return self._joint_step(images, labels, clean_pred_ref)

    def _joint_step(self, images, labels, clean_pred_ref) -> Dict[str, float]:
        # Fine-tuning, train_mode (batch statistics over [x, x~]), or CUDA: one forward per outer step.
        stats: Dict[str, float] = {}
        x_adv = None
        if self.attack is not None:
            with torch.no_grad(), self.precision.autocast():
                clean_pred = self.forward(images).argmax(1)
            res = self.attack(images, labels, clean_pred, clean_pred_ref)
            x_adv, stats["pgd_steps"] = res.x_adv, float(res.steps)
        for _ in range(self.cfg.outer_steps):
            self.optimizer.zero_grad(set_to_none=True)
            parts = outer_loss(self.forward, self.forward_ref, images, labels, x_adv, clean_pred_ref, self.cfg, self.precision)
            self._backward(parts["loss"])
            self._optimizer_step()
        stats.update({k: float(v.detach()) for k, v in parts.items()})
        return stats

    def _split_step(self, images, labels, clean_pred_ref) -> Dict[str, float]:
        # With fixed BatchNorm the outer loss is a sum of a clean term and a term on x~ that
        # share no batch statistics, so each half is forwarded and backwarded on its own and
        # the gradients add up in .grad: the same gradient as the joint pass, in float noise.
        # The first clean half runs before PGD, where its logits also give h(x) for the masks
        # (one forward fewer per batch), and two backward passes of B cost less than one of 2B.
        self.optimizer.zero_grad(set_to_none=True)
        clean, clean_pred = self._clean_half(images, labels)
        res = self.attack(images, labels, clean_pred, clean_pred_ref)
        for i in range(self.cfg.outer_steps):
            if i:  # later outer steps: the clean term at the updated parameters
                self.optimizer.zero_grad(set_to_none=True)
                clean, _ = self._clean_half(images, labels)
            with self.precision.autocast():
                logits_adv = upcast(self.forward(res.x_adv))
            adv = adversarial_loss(logits_adv, labels, res.x_adv, clean_pred_ref, self.forward_ref, self.cfg,
                                   self.precision)
            self._backward(adv["loss"])  # the clean half was checked when it was backwarded
            self._optimizer_step()
        stats = {k: float(v.detach()) for k, v in _combine(clean, adv).items()}
        stats["pgd_steps"] = float(res.steps)
        return stats

    def _clean_half(self, images, labels):
        with self.precision.autocast():
            logits = upcast(self.forward(images))
        parts = clean_loss(logits, labels, self.cfg)
        self._backward(parts["loss"])
        return {k: v.detach() for k, v in parts.items()}, logits.detach().argmax(1)

    def _backward(self, loss: torch.Tensor) -> None:
        """Backward of ``loss``, refused (before any optimizer step) when it is not finite."""
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"loss became {loss.item()} in epoch {self.epoch + 1}; lower lr or check the input data "
                f"(the last good checkpoint, if any, is kept)"
            )
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def _optimizer_step(self) -> None:
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()

    def reference_predictions(self, images: torch.Tensor) -> torch.Tensor:
        """h_bd(x) on the clean subset; constant, so computed once and cached."""
        if self._ref_cache is None or self._ref_cache[0] is not images:
            preds = []
            with torch.no_grad(), self.precision.autocast():
                for i in range(0, images.shape[0], self.cfg.batch_size):
                    preds.append(self.forward_ref(images[i:i + self.cfg.batch_size]).argmax(1))
            self._ref_cache = (images, torch.cat(preds))
        return self._ref_cache[1]

    def run_epoch(self, images: torch.Tensor, labels: torch.Tensor) -> Dict[str, float]:
        """One pass over the clean subset in a seeded random order (the reference's shuffle=True)."""
        ref_pred = self.reference_predictions(images)
        order = torch.randperm(images.shape[0], generator=self.generator).to(images.device)
        totals: Dict[str, float] = {}
        n_batches = 0
        for i in range(0, images.shape[0], self.cfg.batch_size):
            idx = order[i:i + self.cfg.batch_size]
            for k, v in self.step(images[idx], labels[idx], ref_pred[idx]).items():
                totals[k] = totals.get(k, 0.0) + v
            n_batches += 1
        if self.scheduler is not None:
            self.scheduler.step()
        self.epoch += 1
        return {f"train_{k}": v / max(1, n_batches) for k, v in totals.items()}

    def fit(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        evaluate: Optional[Callable[[nn.Module], Dict[str, float]]] = None,
        on_epoch_end: Optional[Callable[["Unlearner", Dict[str, float]], None]] = None,
        epochs: Optional[int] = None,
    ) -> UnlearnResult:
        """Run epochs ``self.epoch + 1 .. epochs`` (default ``n_rounds``); returns model + history.

        ``evaluate(model)`` runs after each epoch and its figures join the history row;
        ``on_epoch_end(self, row)`` is where callers checkpoint, log and plot.
        """
        images = self.precision.format(images.to(self.device))
        labels = labels.to(self.device)
        total = self.cfg.n_rounds if epochs is None else epochs
        modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        try:
            while self.epoch < total:
                t0 = time.perf_counter()
                row: Dict[str, float] = {"epoch": float(self.epoch)}  # 0-based, as BackdoorBench's sau_df.csv
                row.update(self.run_epoch(images, labels))
                row["time_unlearn_s"] = time.perf_counter() - t0
                if evaluate is not None:
                    t1 = time.perf_counter()
                    row.update(evaluate(self.model))
                    row["time_eval_s"] = time.perf_counter() - t1
                self.history.append(row)
                if on_epoch_end is not None:
                    on_epoch_end(self, row)
        finally:
            for m, training in modes:  # the caller's training mode, as torchattacks restores it
                m.training = training
        return UnlearnResult(self.model, self.history)

    # ---- resume ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
            "generator": self.generator.get_state(),
            "epoch": self.epoch,
            "history": [dict(r) for r in self.history],
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.generator.set_state(state["generator"])
        self.epoch = int(state["epoch"])
        self.history = [dict(r) for r in state["history"]]


def unlearn(
    model: nn.Module,
    model_ref: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    cfg: "SAUConfig",
    *,
    mean: Sequence[float] = (0.0,),
    std: Sequence[float] = (1.0,),
    evaluate: Optional[Callable[[nn.Module], Dict[str, float]]] = None,
    on_epoch_end: Optional[Callable[[Unlearner, Dict[str, float]], None]] = None,
) -> UnlearnResult:
    """Purify ``model`` (updated in place) against the frozen backdoored ``model_ref``.

    ``images``: the clean subset, normalised with ``mean`` / ``std``, shape (N, C, H, W);
    ``labels``: (N,). Returns the model and one history row per epoch.
    """
    return Unlearner(model, model_ref, cfg, mean=mean, std=std).fit(
        images, labels, evaluate=evaluate, on_epoch_end=on_epoch_end
    )
