"""Hooks of ``Unlearner.fit``: progress bars, per-epoch files, stop requests live with the caller.

Every hook is optional (subclass :class:`Callback` and override what you need). Order within
one ``fit`` call::

    on_fit_start
    per epoch:  on_epoch_start(epoch, n_batches), per batch: on_batch_end + should_stop,
                then (after ``evaluate``) on_epoch_end(row)
    on_fit_end(stopped)              # also when fit raises (bars close, handlers restored)

``epoch`` is ``u.epoch`` (0-based, epochs completed before this one); ``batch`` is 1-based.
``should_stop`` is polled after every batch: when a callback says yes, ``fit`` returns after
that batch with ``UnlearnResult.stopped`` and ``u.state_dict()`` holding the epoch's
progress, so ``load_state_dict`` + ``fit`` continue at the next batch bit for bit (on CPU).
A stop requested at an epoch's last batch ends ``fit`` after that epoch's ``evaluate`` and
``on_epoch_end``: a stop never skips an epoch's bookkeeping.

Hooks plugged in here without core code: SIGTERM / SIGINT preemption (the run layer's
``PreemptionGuard`` installs signal handlers in ``on_fit_start``, answers ``should_stop`` once a
signal came, and restores the handlers in ``on_fit_end``; the run layer then saves a
checkpoint); a kill test that parks a run at a chosen batch (``on_batch_end``); distributed
runs take the stop decision collectively across ranks before ``should_stop`` answers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Dict, Iterable, List

if TYPE_CHECKING:  # pragma: no cover
    from .unlearn import Unlearner


class Callback:
    def on_fit_start(self, u: "Unlearner") -> None:
        pass

    def on_epoch_start(self, u: "Unlearner", epoch: int, n_batches: int) -> None:
        pass

    def on_batch_end(self, u: "Unlearner", epoch: int, batch: int, stats: Dict[str, float]) -> None:
        pass

    def should_stop(self, u: "Unlearner") -> bool:
        return False

    def on_epoch_end(self, u: "Unlearner", row: Dict[str, float]) -> None:
        pass

    def on_fit_end(self, u: "Unlearner", stopped: bool) -> None:
        pass


class EpochEndFunction(Callback):
    """``fit(on_epoch_end=f)``: ``f(u, row)`` as a callback."""

    def __init__(self, fn: Callable[["Unlearner", Dict[str, float]], None]):
        self.fn = fn

    def on_epoch_end(self, u: "Unlearner", row: Dict[str, float]) -> None:
        self.fn(u, row)


class CallbackList(Callback):
    """Calls each callback in order; ``should_stop`` asks every one (none is skipped)."""

    def __init__(self, callbacks: Iterable[Callback] = ()):
        self.callbacks: List[Callback] = list(callbacks)

    def on_fit_start(self, u):
        for cb in self.callbacks:
            cb.on_fit_start(u)

    def on_epoch_start(self, u, epoch, n_batches):
        for cb in self.callbacks:
            cb.on_epoch_start(u, epoch, n_batches)

    def on_batch_end(self, u, epoch, batch, stats):
        for cb in self.callbacks:
            cb.on_batch_end(u, epoch, batch, stats)

    def should_stop(self, u) -> bool:
        return any([cb.should_stop(u) for cb in self.callbacks])

    def on_epoch_end(self, u, row):
        for cb in self.callbacks:
            cb.on_epoch_end(u, row)

    def on_fit_end(self, u, stopped):
        for cb in self.callbacks:
            cb.on_fit_end(u, stopped)
