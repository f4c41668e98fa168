"""Callbacks of ``Unlearner.fit`` that belong to a run, not to the method."""

import sys
from typing import Dict

from ..core import Callback, Unlearner


class TqdmProgress(Callback):
    """One progress bar per epoch on stderr, a tick per batch."""

    def __init__(self, enabled: bool = True):
        self.enabled, self.bar = enabled, None

    def on_epoch_start(self, u: Unlearner, epoch: int, n_batches: int) -> None:
        from tqdm import tqdm

        done = u.progress.next_batch if u.progress is not None else 0  # resumed mid-epoch
        self.bar = tqdm(total=n_batches, initial=done, desc=f"SAU epoch {epoch + 1}/{u.cfg.n_rounds}", unit="batch",
                        disable=not self.enabled, leave=False, file=sys.stderr)

    def on_batch_end(self, u: Unlearner, epoch: int, batch: int, stats: Dict[str, float]) -> None:
        self.bar.update(1)
        if self.bar.n >= self.bar.total:  # closed before the epoch's evaluation and log line
            self.on_fit_end(u, False)

    def on_fit_end(self, u: Unlearner, stopped: bool) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
