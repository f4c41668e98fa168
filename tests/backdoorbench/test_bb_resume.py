"""A defense killed with SIGKILL in the middle of an epoch and resumed ends bit for bit
where an uninterrupted run ends: same final state_dict, same <name>_df.csv.

The kill point is made deterministic by tests/stall.py, which runs ``defend`` with a
callback that parks the run after a chosen batch and writes a marker; the test then kills
it.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from tests.helpers import bb
from tests.helpers.csv_exact import read_csv_exact
from sau_plugin.safeload import load_trusted, load_weights_only

N_ROUNDS = 2  # 30 clean samples, batch 10: 3 batches per epoch
ENV = dict(os.environ, PYTHONPATH=str(bb.REPO), OMP_NUM_THREADS="1")


def _args(base: Path, name: str, *extra: str):
    args = bb.cli_args(base, "cifar10", "--n_rounds", str(N_ROUNDS), "--batch_size", "10", "--defense_name", name, *extra)
    return [sys.executable, "-m", "sau_plugin", *args]


def _run(base: Path, name: str, *extra: str) -> None:
    done = subprocess.run(_args(base, name, *extra), env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def _kill_at(base: Path, name: str, epoch: int, batch: int) -> None:
    marker = base / f"stalled_{name}"
    stall = [sys.executable, str(Path(bb.__file__).with_name("stall.py")), str(epoch), str(batch), str(marker)]
    proc = subprocess.Popen(stall + _args(base, name)[3:], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "the run never reached the kill point"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    base = tmp_path_factory.mktemp("resume")
    attack, _ = bb.make_record(base, "cifar10", on_disk=True)
    _run(base, "full")
    return base, attack


def _final(attack: Path, name: str):
    out = attack / "defense" / name
    sd = load_weights_only(out / "defense_result.pt", "defense_result.pt", "-")["model"]
    return sd, read_csv_exact(out / f"{name}_df.csv", index_col=0)


@pytest.mark.slow
@pytest.mark.parametrize("epoch, batch", [(2, 2), (1, 1)])
def test_sigkill_mid_epoch_then_resume_equals_an_uninterrupted_run(uninterrupted, epoch, batch):
    base, attack = uninterrupted
    name = f"killed_e{epoch}b{batch}"
    _kill_at(base, name, epoch, batch)
    out = attack / "defense" / name
    assert not (out / "defense_result.pt").exists()  # a killed run leaves no result
    ckpt = out / "checkpoint" / "last.pt"
    assert ckpt.is_file() == (epoch > 1)  # the checkpoint of the last finished epoch, if any
    if ckpt.is_file():
        assert load_trusted(ckpt)["unlearner"]["epoch"] == epoch - 1

    _run(base, name, "--resume")
    sd_full, df_full = _final(attack, "full")
    sd_resumed, df_resumed = _final(attack, name)
    assert list(sd_full) == list(sd_resumed)
    assert all(torch.equal(sd_full[k], sd_resumed[k]) for k in sd_full)  # bitwise
    pd.testing.assert_frame_equal(df_full, df_resumed)  # the csv has no timing columns
    assert df_resumed["epoch"].tolist() == [0, 1]
    assert (out / f"{name}_df.csv").read_text() == (attack / "defense" / "full" / "full_df.csv").read_text()


def test_resume_refuses_other_settings(uninterrupted, capsys):
    from sau_plugin.cli import main

    base, attack = uninterrupted
    args = bb.cli_args(base, "cifar10", "--n_rounds", str(N_ROUNDS), "--batch_size", "10", "--defense_name", "full",
                       "--resume", "--lr", "0.5")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "written with other settings (lr: 0.0001 -> 0.5)" in err and err.count("\n") == 1


@pytest.mark.slow
def test_a_damaged_checkpoint_is_refused_then_overwrite_starts_over(uninterrupted, capsys):
    from sau_plugin.cli import main

    base, attack = uninterrupted
    name = "damaged"
    _kill_at(base, name, 2, 1)  # leaves the checkpoint of epoch 1
    out = attack / "defense" / name
    ckpt = out / "checkpoint" / "last.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])  # e.g. a disk filled up while copying it
    args = bb.cli_args(base, "cifar10", "--n_rounds", str(N_ROUNDS), "--batch_size", "10", "--defense_name", name)
    capsys.readouterr()
    assert main([*args, "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: checkpoint at {str(ckpt)!r} is truncated or corrupt")
    assert err.rstrip().endswith("pass --overwrite instead of --resume to start over") and err.count("\n") == 1
    assert not (out / "defense_result.pt").exists()

    _run(base, name, "--overwrite")  # in a subprocess like the "full" run: same threads, same bits
    sd_full, df_full = _final(attack, "full")
    sd, df = _final(attack, name)
    assert all(torch.equal(sd_full[k], sd[k]) for k in sd_full)
    pd.testing.assert_frame_equal(df_full, df)


@pytest.mark.slow
def test_resume_after_moving_the_record_folder_and_flipping_cpu_heap_reuse(uninterrupted, tmp_path):
    # Neither the record folder's location nor the allocator changes the numbers, so neither blocks --resume.
    import shutil

    base, attack = uninterrupted
    name = "moved"
    _kill_at(base, name, 2, 1)  # leaves the checkpoint of epoch 1
    moved = tmp_path / "elsewhere"
    shutil.copytree(base, moved)
    shutil.rmtree(attack / "defense" / name)  # the original is gone: only the moved copy can be resumed
    _run(moved, name, "--resume", "--cpu_heap_reuse", "False")
    sd_full, df_full = _final(attack, "full")
    sd, df = _final(moved / "record" / attack.name, name)
    assert all(torch.equal(sd_full[k], sd[k]) for k in sd_full)  # bitwise
    pd.testing.assert_frame_equal(df_full, df)


def test_resume_refuses_a_change_that_moves_the_numbers_in_one_line(uninterrupted, capsys):
    from sau_plugin.cli import main

    base, attack = uninterrupted
    args = bb.cli_args(base, "cifar10", "--n_rounds", str(N_ROUNDS), "--batch_size", "10", "--defense_name", "full",
                       "--resume", "--trigger_norm", "0.1", "--cpu_heap_reuse", "False")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "written with other settings (trigger_norm: 0.2 -> 0.1)" in err and err.count("\n") == 1


def test_a_run_stopped_by_a_callback_writes_no_result_and_resumes(tmp_path):
    from sau_plugin.backdoorbench.defense import config_from_args, run_defense
    from sau_plugin.cli import build_parser
    from sau_plugin.core import Callback
    from sau_plugin.errors import SAUError

    class StopAt(Callback):  # after epoch 2 (0-based 1), batch 1
        def __init__(self):
            self.now = None

        def on_batch_end(self, u, epoch, batch, stats):
            self.now = (epoch, batch)

        def should_stop(self, u):
            return self.now == (1, 1)

    attack, _ = bb.make_record(tmp_path, "cifar10", on_disk=True)
    args = bb.cli_args(tmp_path, "cifar10", "--n_rounds", str(N_ROUNDS), "--batch_size", "10", "--defense_name", "cb")
    cfg = config_from_args(build_parser(args).parse_args(args))
    out = attack / "defense" / "cb"
    with pytest.raises(SAUError, match=r"^stopped by a callback after epoch 2 batch 1; no result written; .*last\.pt "
                                       r"holds epoch 1, rerun with --resume$"):
        run_defense(cfg, progress=False, callbacks=[StopAt()])
    assert not (out / "defense_result.pt").exists() and not (out / "sau_result.json").exists()
    resumed = run_defense(config_from_args(build_parser(args).parse_args([*args, "--resume"])), progress=False)
    assert (out / "defense_result.pt").is_file() and len(resumed.timings) > 0
    assert load_trusted(out / "checkpoint" / "last.pt")["unlearner"]["epoch"] == N_ROUNDS
