"""Callbacks of Unlearner.fit: hook order, stop requests, and a stopped epoch resumed bit for bit."""

import copy

import pytest
import torch

from sau_plugin import Callback, NonFiniteLossError, SAUConfig, Unlearner
from tests.helpers.synthetic import MEAN, STD, make, normalize, small_cnn


def _cfg(**kw):
    # 48 samples, batch 16: 3 batches per epoch; random init draws from the generator every batch
    return SAUConfig(**{**dict(device="cpu", amp=False, n_rounds=3, batch_size=16, lr=1e-3, pgd_init="random"), **kw})


def _data():
    x, y = make(48, 7)
    return normalize(x), y


def _unlearner(cfg):
    torch.manual_seed(0)
    m = small_cnn().eval()
    return Unlearner(m, copy.deepcopy(m), cfg, mean=MEAN, std=STD)


class Recorder(Callback):
    def __init__(self):
        self.seen = []

    def on_fit_start(self, u):
        self.seen.append(("fit_start",))

    def on_epoch_start(self, u, epoch, n_batches):
        self.seen.append(("epoch_start", epoch, n_batches))

    def on_batch_end(self, u, epoch, batch, stats):
        assert "loss" in stats
        self.seen.append(("batch_end", epoch, batch))

    def on_epoch_end(self, u, row):
        self.seen.append(("epoch_end", int(row["epoch"]), "test_acc" in row))

    def on_fit_end(self, u, stopped):
        self.seen.append(("fit_end", stopped))


class StopAt(Callback):
    def __init__(self, epoch, batch):
        self.at, self.now = (epoch, batch), None

    def on_batch_end(self, u, epoch, batch, stats):
        self.now = (epoch, batch)

    def should_stop(self, u):
        return self.now == self.at


def _strip(history):
    return [{k: v for k, v in row.items() if not k.startswith("time_")} for row in history]


def test_hooks_are_called_in_order():
    rec = Recorder()
    res = _unlearner(_cfg(n_rounds=2)).fit(*_data(), evaluate=lambda m: {"test_acc": 1.0}, callbacks=[rec])
    expected = [("fit_start",)]
    for e in range(2):
        expected += [("epoch_start", e, 3)] + [("batch_end", e, b) for b in (1, 2, 3)] + [("epoch_end", e, True)]
    assert rec.seen == expected + [("fit_end", False)] and not res.stopped


@pytest.mark.parametrize("epoch, batch", [(1, 2), (0, 1)])
def test_a_stopped_epoch_resumes_bit_for_bit(epoch, batch):
    straight = _unlearner(_cfg())
    straight.fit(*_data())

    first = _unlearner(_cfg())
    res = first.fit(*_data(), callbacks=[StopAt(epoch, batch)])
    assert res.stopped and first.epoch == epoch and len(first.history) == epoch
    state = copy.deepcopy(first.state_dict())
    assert state["progress"]["next_batch"] == batch

    resumed = _unlearner(_cfg())
    resumed.load_state_dict(state)
    rec = Recorder()
    assert not resumed.fit(*_data(), callbacks=[rec]).stopped
    assert rec.seen[1:2 + (3 - batch)] == [("epoch_start", epoch, 3)] + [("batch_end", epoch, b)
                                                                          for b in range(batch + 1, 4)]
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # bitwise
    assert _strip(straight.history) == _strip(resumed.history)
    assert resumed.state_dict()["progress"] is None


def test_a_stop_at_the_last_batch_keeps_the_epochs_bookkeeping():
    rec = Recorder()
    u = _unlearner(_cfg())
    res = u.fit(*_data(), evaluate=lambda m: {"test_acc": 1.0}, callbacks=[StopAt(0, 3), rec])
    assert res.stopped and u.epoch == 1 and len(u.history) == 1 and u.progress is None
    assert rec.seen[-2:] == [("epoch_end", 0, True), ("fit_end", True)]


def test_on_fit_end_runs_when_fit_raises():
    rec = Recorder()
    x, y = _data()
    x[0] = float("nan")
    with pytest.raises(NonFiniteLossError):
        _unlearner(_cfg()).fit(x, y, callbacks=[rec])
    assert rec.seen[-1] == ("fit_end", False)


class StopAfterEpoch(Callback):
    """Asks to stop once an epoch has ended (as a signal that came during the evaluation)."""

    def __init__(self, epoch):
        self.epoch, self.batches = epoch, 0

    def on_batch_end(self, u, epoch, batch, stats):
        self.batches += 1

    def should_stop(self, u):
        return u.progress is None and u.epoch == self.epoch


def test_a_stop_asked_after_an_epoch_is_acted_on_before_the_next_batch():
    stopper = StopAfterEpoch(1)
    u = _unlearner(_cfg(n_rounds=3))
    res = u.fit(*_data(), evaluate=lambda m: {"test_acc": 1.0}, callbacks=[stopper])
    assert res.stopped and u.epoch == 1 and u.progress is None and len(res.history) == 1
    assert stopper.batches == 3  # the batches of epoch 1 only: no batch of epoch 2 ran
