"""The epoch loop of SAU (paper Algorithm 1) around the outer minimisation of eq. 13.

One mini-batch: the variant's inner attack (shared PGD, or vanilla PGD for the ablations)
gives x~; then ``outer_steps`` optimizer steps on the clean term plus the variant's outer
loss on x~ (``core/outer.py``), forwarded jointly or split (one documented choice,
``outer_pass``). Variants come from the registry in ``core/variants.py``; a user's own
attack or outer loss plugs in through ``Unlearner(attack=..., outer_loss=...)``. The model
stays in eval mode (fixed BatchNorm statistics) unless ``train_mode`` is set. Everything
here works on tensors and modules; files, logs and progress bars are the caller's business
(``on_epoch_end`` / ``evaluate``). Several processes: ``parallel=`` (``core/parallel.py``).
"""

from __future__ import annotations

import contextlib
import copy as copy_module
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Union

import torch
import torch.nn as nn

from ..compat import compiled
from ..errors import ConfigError, NonFiniteLossError
from .callbacks import Callback, CallbackList, EpochEndFunction
from .optim import make_optimizer, make_scheduler
from .outer import choose_outer_pass
from .parallel import DataParallel, batch_stats_over_group
from .precision import Precision, choose_precision
from .variants import AttackContext, get_variant

if TYPE_CHECKING:  # the core only reads attributes of the config
    from ..config import MethodConfig, SAUConfig


@dataclass
class UnlearnResult:
    model: nn.Module
    history: List[Dict[str, float]] = field(default_factory=list)
    stopped: bool = False  # a callback's should_stop ended fit before its last epoch


@dataclass
class EpochProgress:
    """An epoch under way: its batch order, batches done, per-key sums of the batch figures."""

    order: torch.Tensor  # CPU permutation of the clean subset
    next_batch: int
    totals: Dict[str, float]


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
    RNG, epoch, history, and the progress of an epoch a callback stopped.

    ``parallel`` (:class:`~sau_plugin.core.parallel.DataParallel`): every rank builds the
    Unlearner alike and passes ``fit`` the whole clean subset; each runs its slice of every
    global batch, with one process's numbers (to rounding). ``should_stop`` is collective.
    """

    def __init__(
        self,
        model: nn.Module,
        model_ref: nn.Module,
        cfg: Union["SAUConfig", "MethodConfig"],
        *,
        mean: Sequence[float] = (0.0,),
        std: Sequence[float] = (1.0,),
        precision: Optional[Precision] = None,
        copy_ref: bool = True,
        attack: Optional[Callable[..., Any]] = None,
        outer_loss: Optional[Callable[..., Dict[str, torch.Tensor]]] = None,
        outer_pass: str = "auto",
        compile: Optional[bool] = None,
        parallel: Optional[DataParallel] = None,
    ):
        # The core reads only the method's hyperparameters (MethodConfig); whether to torch.compile is a
        # setting of the run, taken from a full SAUConfig unless given.
        use_compile = bool(getattr(cfg, "compile", False)) if compile is None else compile
        self.cfg = cfg = cfg.method() if hasattr(cfg, "method") else cfg
        self.device = next(model.parameters()).device
        self.precision = precision or choose_precision(self.device, cfg.amp)
        self.model = self.precision.prepare(model)
        self.model_ref = frozen_reference(model_ref, self.precision, copy=copy_ref)
        self.forward = compiled(self.model) if use_compile else self.model
        self.forward_ref = compiled(self.model_ref) if use_compile else self.model_ref
        self.parallel, self.ddp = parallel, parallel.wrap(self.model) if parallel is not None else None  # outer step
        self.forward_outer = self.forward if self.ddp is None else (compiled(self.ddp) if use_compile else self.ddp)
        self.loss_scale, self.local_empty = 1.0, False  # set per batch under ``parallel`` (DataParallel.step)
        self.optimizer = make_optimizer(self.model, cfg)
        self.scheduler = make_scheduler(self.optimizer, cfg)
        self.scaler = self.precision.make_scaler()
        self.generator = torch.Generator().manual_seed(cfg.random_seed)
        self.epoch = 0  # epochs completed
        self.history: List[Dict[str, float]] = []
        # The variant's (inner attack, outer loss) pair; a given attack / outer_loss replaces its piece.
        variant = get_variant(cfg.variant)
        self.outer_loss = outer_loss if outer_loss is not None else variant.outer_loss
        if attack is None and variant.make_attack is not None:
            attack = variant.make_attack(AttackContext(self.forward, self.forward_ref, cfg, tuple(mean), tuple(std),
                                                       self.precision, self.generator, parallel))
        if (attack is None) != (self.outer_loss is None):
            raise ConfigError(f"variant {cfg.variant!r}: an inner attack needs an outer loss on x~ and vice versa "
                              f"(attack {'given' if attack is not None else 'none'}, outer loss "
                              f"{'given' if self.outer_loss is not None else 'none'})")
        self.attack = attack
        self.outer_pass = choose_outer_pass(outer_pass, has_attack=attack is not None, train_mode=cfg.train_mode,
                                            device=self.device)
        self._ref_cache = None
        self.progress: Optional[EpochProgress] = None  # set while an epoch runs (see run_epoch)
        self._callbacks = CallbackList()
        self._stop_requested = False

    @property
    def split_outer(self) -> bool:
        """Whether the clean and x~ halves are run one by one (see ``core/outer.py``)."""
        return self.outer_pass.name == "split"

    # ---- one batch / one epoch -----------------------------------------------------------------
    def step(self, images: torch.Tensor, labels: torch.Tensor, clean_pred_ref: torch.Tensor) -> Dict[str, float]:
        """Inner maximisation then ``outer_steps`` optimizer steps on one batch."""
        stats: Dict[str, float] = {}
        pre, clean_pred = self.outer_pass.before_attack(self, images, labels)
        x_adv = None
        if self.attack is not None:
            res = self.attack(images, labels, clean_pred, clean_pred_ref)
            x_adv, stats["pgd_steps"] = res.x_adv, float(res.steps)
        for i in range(self.cfg.outer_steps):
            parts = self.outer_pass.loss_and_backward(self, images, labels, x_adv, clean_pred_ref, i, pre)
            self._optimizer_step()
        stats.update({k: float(v.detach()) for k, v in parts.items()})
        return stats

    def backward(self, loss: torch.Tensor) -> None:
        """Backward of ``loss``, refused (before any optimizer step) when it is not finite."""
        finite = bool(torch.isfinite(loss))
        if self.parallel is not None:  # decided together, so that every rank raises or none
            finite = self.parallel.all(finite or self.local_empty)
            loss = loss * self.loss_scale
        if not finite:  # under ``parallel`` this rank's loss may be finite: another rank's was not
            raise NonFiniteLossError(f"loss became {'non-finite' if self.parallel else loss.item()} in epoch "
                                     f"{self.epoch + 1}; lower lr or check the input data (the last good checkpoint, if any, is kept)")
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

    def _ask_stop(self) -> bool:
        """The callbacks' ``should_stop``; under ``parallel`` decided by all ranks together."""
        stop = self._callbacks.should_stop(self)
        return stop if self.parallel is None else self.parallel.any(stop)

    def run_epoch(self, images: torch.Tensor, labels: torch.Tensor) -> Optional[Dict[str, float]]:
        """One pass over the clean subset in a seeded random order (the reference's shuffle=True).

        Continues the epoch in ``self.progress`` if one is under way. Returns the epoch's mean
        training figures, or None when a callback's ``should_stop`` ended it early.
        """
        ref_pred = self.reference_predictions(images)
        n, size = images.shape[0], self.cfg.batch_size
        n_batches = -(-n // size)
        if self.progress is None:
            self.progress = EpochProgress(torch.randperm(n, generator=self.generator), 0, {})
        p = self.progress
        order = p.order.to(images.device)
        self._callbacks.on_epoch_start(self, self.epoch, n_batches)
        for i in range(p.next_batch * size, n, size):
            idx = order[i:i + size]
            stats = (self.step(images[idx], labels[idx], ref_pred[idx]) if self.parallel is None
                     else self.parallel.step(self, images, labels, ref_pred, idx))
            for k, v in stats.items():
                p.totals[k] = p.totals.get(k, 0.0) + v
            p.next_batch += 1
            self._callbacks.on_batch_end(self, self.epoch, p.next_batch, stats)
            if self._ask_stop():
                self._stop_requested = True
                if p.next_batch < n_batches:
                    return None
        self.progress = None
        if self.scheduler is not None:
            self.scheduler.step()
        self.epoch += 1
        return {f"train_{k}": v / max(1, p.next_batch) for k, v in p.totals.items()}

    def fit(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        evaluate: Optional[Callable[[nn.Module], Dict[str, float]]] = None,
        on_epoch_end: Optional[Callable[["Unlearner", Dict[str, float]], None]] = None,
        callbacks: Sequence[Callback] = (),
        epochs: Optional[int] = None,
    ) -> UnlearnResult:
        """Run epochs ``self.epoch + 1 .. epochs`` (default ``n_rounds``); returns model + history.

        ``evaluate(model)`` runs after each epoch and its figures join the history row;
        ``on_epoch_end(self, row)`` is where callers checkpoint, log and plot (called before
        ``callbacks``' own ``on_epoch_end``). ``callbacks``: see ``core/callbacks.py``.
        """
        images = self.precision.format(images.to(self.device))
        labels = labels.to(self.device)
        if self.parallel is not None:
            self.parallel.check_run(self.cfg, labels.shape[0])
        total = self.cfg.n_rounds if epochs is None else epochs
        self._callbacks = CallbackList(([EpochEndFunction(on_epoch_end)] if on_epoch_end else []) + list(callbacks))
        self._stop_requested = stopped = False
        modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        group_bn = contextlib.ExitStack()
        try:
            if self.parallel is not None and self.cfg.train_mode:  # batch statistics of the global batch
                group_bn.enter_context(batch_stats_over_group(self.model, self.parallel))
            self._callbacks.on_fit_start(self)
            while self.epoch < total and not stopped:
                t0 = time.perf_counter()
                row: Dict[str, float] = {"epoch": float(self.epoch)}  # 0-based, as BackdoorBench's sau_df.csv
                train = self.run_epoch(images, labels)
                if train is None:  # stopped mid-epoch; self.progress says where
                    stopped = True
                    break
                row.update(train)
                row["time_unlearn_s"] = time.perf_counter() - t0
                if evaluate is not None:
                    t1 = time.perf_counter()
                    row.update(evaluate(self.model))
                    row["time_eval_s"] = time.perf_counter() - t1
                self.history.append(row)
                self._callbacks.on_epoch_end(self, row)
                stopped = self._stop_requested or self._ask_stop()  # e.g. a signal during the evaluation
        finally:
            for m, training in modes:  # the caller's training mode, as torchattacks restores it
                m.training = training
            group_bn.close()
            callbacks_now, self._callbacks = self._callbacks, CallbackList()
            callbacks_now.on_fit_end(self, stopped)
        return UnlearnResult(self.model, self.history, stopped)

    # ---- resume ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        p = self.progress
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
            "generator": self.generator.get_state(),
            "epoch": self.epoch,
            "history": [dict(r) for r in self.history],
            # None between epochs; mid-epoch (after a should_stop): the order, batches done, sums so far
            "progress": None if p is None else {"order": p.order.clone(), "next_batch": p.next_batch,
                                                "totals": dict(p.totals)},
            "attack": getattr(self.attack, "state_dict", lambda: None)(),  # e.g. the universal perturbation
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
        p = state.get("progress")
        self.progress = None if p is None else EpochProgress(p["order"].clone(), int(p["next_batch"]), dict(p["totals"]))
        if state.get("attack") is not None and hasattr(self.attack, "load_state_dict"):
            self.attack.load_state_dict(state["attack"])


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
    return Unlearner(model, model_ref, cfg, mean=mean, std=std).fit(images, labels, evaluate=evaluate,
                                                                    on_epoch_end=on_epoch_end)
