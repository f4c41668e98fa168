"""Refusals of runs over several processes: ``--device cuda:0,1`` where the GPUs are missing
(one line, exit 2, nothing written), errors agreed by all ranks (rank 0 reports the failing
rank's), and a torchrun job whose input is bad (one ``error:`` line, no output folder)."""

import os
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp

from sau_plugin import ConfigError, DeviceError, cli
from tests.distributed import workers
from tests.helpers import bb

ENV = dict(os.environ, PYTHONPATH=str(bb.REPO), OMP_NUM_THREADS="1")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


@pytest.fixture
def record(tmp_path):
    attack, _ = bb.make_record(tmp_path, "cifar10", on_disk=False)
    return tmp_path, attack


def _defend(base, device, capsys):
    args = bb.cli_args(base, "cifar10")
    args[args.index("--device") + 1] = device
    code = cli.main(args)
    return code, capsys.readouterr().err.strip().splitlines()


def test_a_gpu_list_without_cuda_is_one_line_and_nothing_is_written(record, capsys, monkeypatch):
    base, attack = record
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, err = _defend(base, "cuda:0,1", capsys)
    assert code == 2 and len(err) == 1
    assert err[0].startswith("error: --device cuda:0,1 asks for 2 GPUs, but CUDA is not available here")
    assert "--device cpu" in err[0]
    assert not (attack / "defense").exists()


def test_a_gpu_list_longer_than_the_machine_has_is_one_line(record, capsys, monkeypatch):
    base, attack = record
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    code, err = _defend(base, "cuda:0,1", capsys)
    assert code == 2 and len(err) == 1
    assert "asks for GPU 1, but only 1 CUDA device(s) are visible" in err[0]
    assert not (attack / "defense").exists()


@pytest.mark.parametrize("device, says", [("cuda:0,0", "each GPU index once"), ("cuda:0,x", "a GPU list like 'cuda:0,1'")])
def test_a_malformed_gpu_list_is_refused(record, capsys, device, says):
    base, _ = record
    code, err = _defend(base, device, capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and says in err[0]


def test_device_errors_are_configuration_errors():
    assert issubclass(DeviceError, ConfigError)


def test_an_error_on_one_rank_is_raised_on_every_rank_naming_it(tmp_path):
    out = tmp_path / "seen"
    mp.spawn(workers.agree_main, args=(2, str(tmp_path / "init"), str(out)), nprocs=2, join=True)
    seen = [torch.load(f"{out}.{rank}") for rank in range(2)]
    assert seen[0] == ("DatasetError", "rank 1: clean data not found on this node")
    assert seen[1] == ("DatasetError", "clean data not found on this node")


@pytest.mark.slow
def test_a_bad_input_under_torchrun_is_one_error_line_from_rank_0_and_no_output(record):
    base, attack = record
    args = bb.cli_args(base, "cifar10")
    args[args.index("--result_file") + 1] = "no_such_attack"
    done = subprocess.run([*TORCHRUN, "-m", "sau_plugin", *args], env=ENV, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no_such_attack" in errors[0], done.stderr[-2000:]
    assert not (base / "record" / "no_such_attack").exists() and not (attack / "defense").exists()
