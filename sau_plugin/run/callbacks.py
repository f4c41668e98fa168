"""Callbacks of ``Unlearner.fit`` that belong to a run, not to the method."""

import signal
import sys
import threading
from typing import Any, Dict, Optional

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


class PreemptionGuard(Callback):
    """SIGTERM or SIGINT during ``fit``: finish the current batch, then stop (cluster schedulers
    stop jobs with SIGTERM). The run layer then saves the checkpoint and raises
    :class:`~sau_plugin.errors.Preempted`.

    The handlers live from ``on_fit_start`` to ``on_fit_end``, which puts the previous ones
    back; outside ``fit`` the signals act as before (SIGINT: KeyboardInterrupt). Python lets
    only the main thread set signal handlers: in another thread, or for a signal the platform
    lacks, the guard does nothing and the signal keeps its usual effect.
    """

    SIGNALS = ("SIGTERM", "SIGINT")

    def __init__(self) -> None:
        self.signal: Optional[int] = None  # the first signal received during fit
        self._previous: Dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal is None:
            self.signal = signum

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signal).name if self.signal is not None else ""

    def on_fit_start(self, u: Unlearner) -> None:
        self.signal = None
        if threading.current_thread() is not threading.main_thread():
            return
        for name in self.SIGNALS:
            sig = getattr(signal, name, None)
            if sig is None:
                continue
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except (OSError, ValueError):  # not settable here: leave it alone
                pass

    def should_stop(self, u: Unlearner) -> bool:
        return self.signal is not None

    def on_fit_end(self, u: Unlearner, stopped: bool) -> None:
        while self._previous:
            sig, previous = self._previous.popitem()
            # None: the previous handler was not set from Python; the default is the closest one can restore
            signal.signal(sig, signal.SIG_DFL if previous is None else previous)
