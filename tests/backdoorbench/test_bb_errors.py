"""Every user-caused failure of ``defend``: the package's exception type, one line on
stderr, exit code 2, and nothing partial left behind (no output folder for bad input, no
defense_result.pt, no temporary files)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import bb
from sau_plugin import errors
from sau_plugin.backdoorbench.defense import run_defense
from sau_plugin.cli import main
from sau_plugin.safeload import load_trusted
from sau_plugin.config import SAUConfig
from sau_plugin.models import create_model



def _edit(attack: Path, **changes) -> list:
    bb.edit_attack_result(attack, **changes)
    return []  # no extra command-line arguments


# name -> (prepare(tmp_path, attack) -> extra CLI args, expected message, exception type)
CASES = {
    "result folder missing": (lambda t, a: ["--result_file", "no_such_attack"], r"attack result folder .*no_such_attack.* not found", errors.RecordError),
    "attack_result.pt missing": (lambda t, a: (a / "attack_result.pt").unlink() or [], r"attack_result.pt not found", errors.RecordError),
    "truncated file": (lambda t, a: (a / "attack_result.pt").write_bytes((a / "attack_result.pt").read_bytes()[:3000]) and [],
                       r"truncated or corrupt", errors.RecordError),
    "corrupt file": (lambda t, a: (a / "attack_result.pt").write_bytes(os.urandom(5000)) and [], r"truncated or corrupt", errors.RecordError),
    "missing keys": (lambda t, a: _edit(a, img_size=bb.DROP, bd_test=bb.DROP), r"missing key\(s\) img_size, bd_test", errors.RecordError),
    "unsafe pickle": (lambda t, a: _edit(a, x=bb.RunsCode(t / "pwned")), r"(posix|os)\.system .*could run code", errors.UnsafePickleError),
    "unknown model name": (lambda t, a: _edit(a, model_name="resnet999"), r"unknown model 'resnet999'; supported: .*preactresnet18", errors.ModelError),
    "state_dict mismatch": (lambda t, a: _edit(a, model=create_model("preactresnet18", 5, width=4).state_dict()),
                            r"does not fit model PreActResNet18: shape mismatch \[linear.weight: expected \(10, 32\), found \(5, 32\)", errors.ModelError),
    "dataset files missing": (lambda t, a: shutil.rmtree(t / "data") or [], r"CIFAR-10 folder not found: looked for .*data/cifar10/cifar-10-batches-py", errors.DatasetError),
    "dataset of another attack": (lambda t, a: ["--dataset", "gtsrb"], r"--dataset gtsrb but the attack result was made on 'cifar10'; pass --dataset cifar10 or leave --dataset out", errors.ConfigError),
    "ratio out of range": (lambda t, a: ["--ratio", "1.5"], r"ratio .* must be in \(0, 1\]; got 1.5", errors.ConfigError),
    "ratio selects no sample": (lambda t, a: ["--ratio", "0.001"], r"ratio 0.001 of 60 clean training samples selects no sample", errors.DatasetError),
    "index out of range": (lambda t, a: (t / "idx.txt").write_text("1\n60\n") and ["--index", str(t / "idx.txt")],
                           r"index file .* outside \[0, 60\)", errors.DatasetError),
    "unknown norm type": (lambda t, a: ["--norm_type", "L3"], r"norm_type must be one of L_inf, L2, L1, Reg; got 'L3'", errors.ConfigError),
    "unknown init type": (lambda t, a: ["--pgd_init", "gauss"], r"pgd_init must be one of .*got 'gauss'", errors.ConfigError),
    "cuda not available": (lambda t, a: ["--device", "cuda"], r"CUDA is not available.*pass --device cpu", errors.DeviceError),
    "output not writable": (lambda t, a: (a / "defense").write_text("a file where a folder should be") and [],
                            r"cannot create the defense output .* is not a writable folder", errors.OutputError),
}


def _nothing_partial(tmp_path: Path, attack: Path, case: str) -> None:
    assert not list(tmp_path.rglob("defense_result.pt"))
    assert not list(tmp_path.rglob("*.tmp"))
    if case != "output not writable":
        assert not (attack / "defense").exists()  # inputs are checked before anything is written


@pytest.mark.parametrize("case", list(CASES))
def test_each_error_through_the_command_line(tmp_path, capsys, case):
    if case == "cuda not available" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    prepare, message, exc_type = CASES[case]
    attack, _ = bb.make_record(tmp_path, "cifar10", on_disk=False)
    extra = prepare(tmp_path, attack)
    capsys.readouterr()
    assert main(bb.cli_args(tmp_path, "cifar10", *extra)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err  # one clear line
    assert re.search(message, err), err
    _nothing_partial(tmp_path, attack, case)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("case", ["ratio selects no sample", "unknown model name"])
def test_the_same_errors_raise_the_package_types_from_the_api(tmp_path, case):
    prepare, message, exc_type = CASES[case]
    attack, _ = bb.make_record(tmp_path, "cifar10", on_disk=False)
    extra = prepare(tmp_path, attack)
    flags = {k.lstrip("-"): v for k, v in zip(extra[::2], extra[1::2])}
    cfg = SAUConfig.from_yaml(bb.yaml_for("cifar10"), {"device": "cpu", "result_file": "attack", "n_rounds": 1,
                                                       "record_dir": str(tmp_path / "record"), **flags})
    with pytest.raises(exc_type, match=message):
        run_defense(cfg, progress=False)


def test_non_finite_loss_stops_names_the_epoch_and_keeps_the_last_checkpoint(tmp_path, capsys):
    attack, _ = bb.make_record(tmp_path, "cifar10", on_disk=False)
    # one batch per epoch; an absurd learning rate blows the weights up in the first step
    args = bb.cli_args(tmp_path, "cifar10", "--lr", "1e30", "--batch_size", "64", "--n_rounds", "3")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "loss became nan in epoch 2" in err and "last.pt, after epoch 1" in err
    out = attack / "defense" / "sau"
    assert not (out / "defense_result.pt").exists() and not list(tmp_path.rglob("*.tmp"))
    state = load_trusted(out / "checkpoint" / "last.pt")
    assert state["unlearner"]["epoch"] == 1 and len(state["unlearner"]["history"]) == 1


@pytest.mark.parametrize("case", ["unsafe pickle", "cuda not available"])
def test_real_process_exit_code_and_single_stderr_line(tmp_path, case):
    if case == "cuda not available" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    prepare, message, _ = CASES[case]
    attack, _ = bb.make_record(tmp_path, "cifar10", on_disk=False)
    extra = prepare(tmp_path, attack)
    env = dict(os.environ, PYTHONPATH=str(bb.REPO), OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-m", "sau_plugin", *bb.cli_args(tmp_path, "cifar10", *extra)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("error: ")
    assert re.search(message, run.stderr)
    _nothing_partial(tmp_path, attack, case)
    assert not (tmp_path / "pwned").exists()
