"""SIGTERM / SIGINT during unlearning: the run finishes its batch, saves its checkpoint (with the
stopped epoch's progress), writes no result, exits with 75 and one line; ``--resume`` then ends
bit for bit where an uninterrupted run ends.

The signal point is made deterministic by tests/helpers/stall.py ``--until-stop``: a callback
parks the run after a chosen batch and writes a marker; the test signals the process, and the
callback lets the run go on once the guard has seen the signal.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from tests.helpers import bb
from tests.helpers.csv_exact import read_csv_exact
from sau_plugin.core import Callback
from sau_plugin.errors import Preempted, SAUError
from sau_plugin.run import checkpoint
from sau_plugin.run.callbacks import PreemptionGuard
from sau_plugin.safeload import load_trusted, load_weights_only

N_ROUNDS = 2  # 30 clean samples, batch 10: 3 batches per epoch
ENV = dict(os.environ, PYTHONPATH=str(bb.REPO), OMP_NUM_THREADS="1")


# ---- the guard alone ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
def test_guard_turns_a_signal_into_a_stop_request_and_restores_the_handlers(name):
    sig = getattr(signal, name)
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    guard = PreemptionGuard()
    guard.on_fit_start(None)
    try:
        assert all(signal.getsignal(s) == guard._handle for s in before)
        assert not guard.should_stop(None)
        signal.raise_signal(sig)  # handled here: no KeyboardInterrupt, no exit
        assert guard.should_stop(None) and guard.signal == sig and guard.signal_name == name
        signal.raise_signal(signal.SIGTERM if name == "SIGINT" else signal.SIGINT)
        assert guard.signal == sig  # the first signal is the one reported
    finally:
        guard.on_fit_end(None, True)
    assert {s: signal.getsignal(s) for s in before} == before
    guard.on_fit_start(None)  # a second fit starts clean
    assert not guard.should_stop(None)
    guard.on_fit_end(None, False)
    assert {s: signal.getsignal(s) for s in before} == before


def test_guard_off_the_main_thread_changes_nothing():
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    seen = []

    def in_thread():
        guard = PreemptionGuard()
        guard.on_fit_start(None)  # Python refuses handlers here: the guard stays out of the way
        seen.append({s: signal.getsignal(s) for s in before})
        seen.append(guard.should_stop(None))
        guard.on_fit_end(None, False)

    t = threading.Thread(target=in_thread)
    t.start()
    t.join()
    assert seen == [before, False]
    assert {s: signal.getsignal(s) for s in before} == before


# ---- a run in this process ------------------------------------------------------------------------

def _cfg(base: Path, name: str, *extra: str):
    from sau_plugin.backdoorbench.defense import config_from_args
    from sau_plugin.cli import build_parser

    args = bb.cli_args(base, "cifar10", "--n_rounds", str(N_ROUNDS), "--batch_size", "10", "--defense_name", name,
                       *extra)
    return config_from_args(build_parser(args).parse_args(args))


def _final(attack: Path, name: str):
    out = attack / "defense" / name
    sd = load_weights_only(out / "defense_result.pt", "defense_result.pt", "-")["model"]
    return sd, read_csv_exact(out / f"{name}_df.csv", index_col=0)


def _assert_same_result(attack: Path, name: str, reference: str) -> None:
    sd_ref, df_ref = _final(attack, reference)
    sd, df = _final(attack, name)
    assert list(sd_ref) == list(sd)
    assert all(torch.equal(sd_ref[k], sd[k]) for k in sd_ref)  # bitwise
    pd.testing.assert_frame_equal(df_ref, df)
    assert df["epoch"].tolist() == list(range(N_ROUNDS))
    out = attack / "defense"
    assert (out / name / f"{name}_df.csv").read_text() == (out / reference / f"{reference}_df.csv").read_text()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    from sau_plugin.run import run_defense

    base = tmp_path_factory.mktemp("preempt")
    attack, _ = bb.make_record(base, "cifar10", on_disk=True)
    run_defense(_cfg(base, "full"), progress=False)
    return base, attack


class SignalAt(Callback):
    """Sends ``sig`` to this process after batch ``batch`` of epoch ``epoch`` (1-based)."""

    def __init__(self, sig, epoch, batch):
        self.sig, self.at = sig, (epoch, batch)

    def on_batch_end(self, u, epoch, batch, stats):
        if (epoch + 1, batch) == self.at:
            signal.raise_signal(self.sig)


@pytest.mark.parametrize("sig, epoch, batch, progress", [
    (signal.SIGTERM, 2, 2, 2),  # mid-epoch: the checkpoint holds epoch 2's first two batches
    (signal.SIGINT, 1, 3, None),  # the epoch's last batch: it is finished (evaluated, checkpointed) first
])
def test_a_signal_during_fit_checkpoints_then_resume_equals_an_uninterrupted_run(uninterrupted, sig, epoch, batch,
                                                                                 progress):
    from sau_plugin.run import run_defense

    base, attack = uninterrupted
    name = f"cut_{signal.Signals(sig).name}"
    before = signal.getsignal(sig)
    with pytest.raises(Preempted) as caught:
        run_defense(_cfg(base, name), progress=False, callbacks=[SignalAt(sig, epoch, batch)])
    assert signal.getsignal(sig) == before  # the handler is put back
    out = attack / "defense" / name
    ckpt = out / "checkpoint" / "last.pt"
    where = (f"in epoch {epoch} of {N_ROUNDS} after batch {batch} of 3" if progress
             else f"after epoch {epoch} of {N_ROUNDS}")
    assert str(caught.value) == (f"preempted by {signal.Signals(sig).name} {where}; no result written; "
                                 f"checkpoint {ckpt}; rerun with --resume")
    assert caught.value.exit_code == 75 and isinstance(caught.value, SAUError)
    assert not (out / "defense_result.pt").exists() and not (out / "sau_result.json").exists()
    state = load_trusted(ckpt)
    saved = state["unlearner"]
    assert saved["epoch"] == (epoch - 1 if progress else epoch)
    assert (saved["progress"] or {}).get("next_batch") == progress
    assert state["format"] == (checkpoint.FORMAT_MID_EPOCH if progress else checkpoint.FORMAT)

    run_defense(_cfg(base, name, "--resume"), progress=False)
    _assert_same_result(attack, name, "full")


def test_a_checkpoint_of_format_1_is_still_read(uninterrupted, tmp_path):
    base, attack = uninterrupted
    state = load_trusted(attack / "defense" / "full" / "checkpoint" / "last.pt")
    assert state["format"] == "sau_plugin.checkpoint/1"  # between epochs: as before there was a /2
    state["unlearner"].pop("progress")  # as written before the progress of a stopped epoch was saved
    old = tmp_path / "old.pt"
    torch.save(state, old)
    read = checkpoint.read(old, _cfg(base, "full"), state["indices"].numpy())
    assert read["unlearner"]["epoch"] == N_ROUNDS and "progress" not in read["unlearner"]


def test_ctrl_c_outside_fit_still_exits_130(tmp_path, monkeypatch, capsys):
    from sau_plugin.backdoorbench import defense
    from sau_plugin.cli import main

    def interrupted(*args, **kwargs):  # Ctrl-C while the inputs load: no guard, no checkpoint to keep
        raise KeyboardInterrupt

    monkeypatch.setattr(defense, "run_defense", interrupted)
    capsys.readouterr()
    assert main(_argv(tmp_path, "x")) == 130
    assert capsys.readouterr().err == "error: interrupted\n"


# ---- the command line, signalled from outside -----------------------------------------------------

def _argv(base: Path, name: str, *extra: str):
    return bb.cli_args(base, "cifar10", "--n_rounds", str(N_ROUNDS), "--batch_size", "10", "--defense_name", name,
                       *extra)


@pytest.mark.slow
def test_sigterm_mid_epoch_exits_75_with_a_checkpoint_and_resume_is_bitwise_equal(tmp_path):
    attack, _ = bb.make_record(tmp_path, "cifar10", on_disk=True)
    full = subprocess.run([sys.executable, "-m", "sau_plugin", *_argv(tmp_path, "full")], env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert full.returncode == 0, full.stderr

    marker = tmp_path / "parked"
    stall = [sys.executable, str(Path(bb.__file__).with_name("stall.py")), "--until-stop", "2", "2", str(marker)]
    proc = subprocess.Popen(stall + _argv(tmp_path, "term"), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 240
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "the run never reached batch 2 of epoch 2"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    out = attack / "defense" / "term"
    ckpt = out / "checkpoint" / "last.pt"
    assert proc.returncode == 75, stderr
    assert stderr == (f"error: preempted by SIGTERM in epoch 2 of {N_ROUNDS} after batch 2 of 3; no result written; "
                      f"checkpoint {ckpt}; rerun with --resume\n")
    assert stdout == ""
    assert not (out / "defense_result.pt").exists() and not (out / "sau_result.json").exists()
    saved = load_trusted(ckpt)["unlearner"]
    assert (saved["epoch"], saved["progress"]["next_batch"]) == (1, 2)

    resumed = subprocess.run([sys.executable, "-m", "sau_plugin", *_argv(tmp_path, "term", "--resume")], env=ENV,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    _assert_same_result(attack, "term", "full")
