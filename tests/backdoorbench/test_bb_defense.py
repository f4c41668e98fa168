"""The whole defense over tiny record folders: through BackdoorBench's class interface and
through the command line, in both container modes and every on-disk dataset format,
checking every output file against BackdoorBench's columns and keys."""

import argparse
import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

from tests.helpers import bb
from tests.helpers.csv_exact import read_csv_exact
from sau_plugin.backdoorbench.datasets import load_split
from sau_plugin.backdoorbench.defense import sau
from sau_plugin.backdoorbench.install import MARKER
from sau_plugin.backdoorbench.metric_csv import SUMMARY_ROWS
from sau_plugin.backdoorbench.results import DF_COLUMNS, LOSS_COLUMNS
from sau_plugin.cli import main
from sau_plugin.safeload import load_weights_only
from sau_plugin.metrics import der
from sau_plugin.models import create_model, infer_model_kwargs, load_weights

FIGURES = ("test_acc", "test_asr", "test_ra")


def check_outputs(out: Path, name: str, n_rounds: int, n_train: int, ratio: float = 0.5, seed: int = 0) -> dict:
    """Every output exists with BackdoorBench's columns and keys; returns sau_result.json."""
    for f in ("defense_result.pt", f"{name}_df.csv", f"{name}_df_summary.csv", "sau_result.json",
              "log/index.txt", "checkpoint/last.pt"):
        assert (out / f).is_file(), f
    logs = list((out / "log").glob("*.log"))
    assert len(logs) >= 1 and all("shared PGD:" not in f.read_text() for f in logs)  # debug lines: --log_level debug
    for png in (f"{name}_acc_like_metric_plots.png", f"{name}_loss_metric_plots.png"):
        with Image.open(out / png) as im:
            assert im.format == "PNG" and im.size == (1280, 960)
    assert not list(out.rglob("*.tmp"))  # atomic writes leave no temporaries

    header = (out / f"{name}_df.csv").read_text().splitlines()[0]
    assert header == "," + ",".join(DF_COLUMNS)  # unnamed index column, then BackdoorBench's columns
    df = read_csv_exact(out / f"{name}_df.csv", index_col=0)
    # BackdoorBench's sau_df.csv: one row per epoch 0 .. n_rounds - 1, nothing else
    assert df["epoch"].tolist() == list(range(n_rounds)) and df.index.tolist() == list(range(n_rounds))
    summary = read_csv_exact(out / f"{name}_df_summary.csv", index_col=0)
    assert summary.index.tolist() == SUMMARY_ROWS and summary.columns.tolist() == DF_COLUMNS
    assert float(summary.loc["last", "test_asr"]) == df["test_asr"].iloc[-1]
    assert float(summary.loc["valid_max", "test_acc"]) == df["test_acc"].max()  # over the epochs only
    assert float(summary.loc["valid_max", "test_asr"]) == df["test_asr"].max()
    assert summary.loc["exist_nan_value"].astype(str).tolist() == ["False"] * len(DF_COLUMNS)

    result = json.loads((out / "sau_result.json").read_text())
    first, last = result["no_defense"], df.iloc[-1]  # the no-defense figures live in sau_result.json only
    assert set(first) == set(FIGURES) and set(result["no_defense_losses"]) == set(LOSS_COLUMNS)
    assert result["final"] == {k: last[k] for k in FIGURES}
    assert result["der"] == pytest.approx(der(first["test_acc"], first["test_asr"], last["test_acc"], last["test_asr"]))
    assert set(result["timings_s"]) >= {"load", "clean_subset", "initial_eval", "unlearn", "eval", "write", "total"}
    assert result["allocator"].startswith("glibc heap reuse") or not sys.platform.startswith("linux")  # CPU default
    log_text = "".join(p.read_text() for p in (out / "log").glob("*.log"))
    assert f"runtime: {result['allocator']}" in log_text  # applied by the run layer, and logged
    assert {"torch", "numpy", "sau_plugin"} <= set(result["versions"]) and result["config"]["n_rounds"] == n_rounds

    indices = [int(v) for v in (out / "log" / "index.txt").read_text().split()]
    random.seed(seed)
    assert indices == random.sample(range(n_train), int(n_train * ratio))

    saved = load_weights_only(out / "defense_result.pt", "defense_result.pt", "-")
    assert set(saved) == {"model_name", "num_classes", "model"}
    model = create_model(saved["model_name"], saved["num_classes"], **infer_model_kwargs(saved["model_name"], saved["model"]))
    load_weights(model, saved["model"])  # strict: every key and shape fits the named model
    return result


def test_through_backdoorbenchs_class_interface_in_file_mode(tmp_path):
    attack, original = bb.make_record(tmp_path, "cifar10", on_disk=False, module_prefix=True)
    (attack / "attack_df_summary.csv").write_text(",test_acc,test_asr\nlast,0.91,0.95\nvalid_max,0.92,0.96\n")
    parser = argparse.ArgumentParser()
    sau.add_arguments(parser)
    args = parser.parse_args(["--yaml_path", str(bb.yaml_for("cifar10")), "--dataset", "cifar10", "--device", "cpu",
                              "--record_dir", str(tmp_path / "record"), "--amp", "False", "--n_rounds", "2",
                              "--ratio", "0.5", "--batch_size", "16", "--no_progress"])
    method = sau(args)
    result = method.defense("attack")
    out = attack / "defense" / "sau"
    assert method.save_path == out and method.attack_file == attack
    info = check_outputs(out, "sau", n_rounds=2, n_train=60)
    assert info["attack_summary"] == {"last": {"test_acc": 0.91, "test_asr": 0.95},
                                      "valid_max": {"test_acc": 0.92, "test_asr": 0.96}}
    saved = load_weights_only(out / "defense_result.pt", "defense_result.pt", "-")["model"]
    assert all(torch.equal(saved[k], v.cpu()) for k, v in result["model"].state_dict().items())
    assert any(not torch.equal(saved[k], v) for k, v in original.state_dict().items())  # it did unlearn
    assert method.outcome.der == info["der"] and method.outcome.before == info["no_defense"]


@pytest.mark.parametrize("dataset, data_kwargs, n_train", [
    ("cifar10", {}, 60),
    ("cifar100", {}, 40),
    ("mnist", {"gz": True}, 40),
    ("gtsrb", {}, 43),
    ("tiny", {"val_layout": "annotations"}, 18),
    ("tiny", {"val_layout": "folders"}, 18),
])
def test_command_line_over_each_on_disk_format(tmp_path, capsys, dataset, data_kwargs, n_train):
    attack, _ = bb.make_record(tmp_path, dataset, on_disk=True, data_kwargs=data_kwargs)
    assert list((attack / "bd_test_dataset").rglob("*.png"))  # poisoned test set saved as PNGs
    assert main(bb.cli_args(tmp_path, dataset, "--defense_name", "sau_cli")) == 0
    info = check_outputs(attack / "defense" / "sau_cli", "sau_cli", n_rounds=1, n_train=n_train)
    assert info["loader"] == "standalone" and info["dataset"] == dataset
    assert "DER" in capsys.readouterr().out


def test_existing_output_is_kept_without_overwrite(tmp_path, capsys):
    attack, _ = bb.make_record(tmp_path, "cifar10")
    assert main(bb.cli_args(tmp_path)) == 0
    result = attack / "defense" / "sau" / "defense_result.pt"
    before = result.read_bytes()
    capsys.readouterr()
    assert main(bb.cli_args(tmp_path, "cifar10", "--lr", "0.01")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: defense output") and "--overwrite" in err and "\n" not in err
    assert result.read_bytes() == before
    assert main(bb.cli_args(tmp_path, "cifar10", "--lr", "0.01", "--overwrite")) == 0
    assert result.read_bytes() != before


def test_epochs_flag_sets_n_rounds_unless_given(tmp_path):
    attack, _ = bb.make_record(tmp_path, "cifar10")
    args = [a for a in bb.cli_args(tmp_path) if a not in ("--n_rounds", "1")]
    assert main(args + ["--epochs", "2"]) == 0
    assert pd.read_csv(attack / "defense" / "sau" / "sau_df.csv")["epoch"].tolist() == [0, 1]
    assert main(args + ["--epochs", "5", "--n_rounds", "1", "--defense_name", "b"]) == 0
    assert pd.read_csv(attack / "defense" / "b" / "b_df.csv")["epoch"].tolist() == [0]


FAKE_LOADER = '''
"""Stand-in for BackdoorBench's utils/save_load_attack.py (which needs torchvision)."""
from pathlib import Path
import torch
from sau_plugin.backdoorbench.loaders import load_data
from sau_plugin.backdoorbench.record import read_attack_result

class _Wrapped:
    def __init__(self, items): self.wrapped_dataset = items

class _Split:
    def __init__(self, s): self.s, self.targets = s, s.labels
    def __len__(self): return len(self.s)
    def __getitem__(self, i): return self.s.image(i), int(self.s.labels[i])

class _Bd:
    def __init__(self, p): self.p = p
    def __len__(self): return len(self.p)
    def __getitem__(self, i):
        return self.p.load(i), int(self.p.bd_labels[i]), int(self.p.original_index[i]), 1, int(self.p.orig_labels[i])

def load_attack_result(save_path):
    Path("BACKDOORBENCH_LOADER_USED").write_text(save_path)
    path = Path(save_path)
    rec = read_attack_result(path.parent)
    d = load_data(rec, path.parent, path.parent.parent, "standalone")
    return {"model_name": rec.model_name, "model": rec.state_dict, "clean_train": _Wrapped(_Split(d.clean_train)),
            "clean_test": _Wrapped(_Split(d.clean_test)), "bd_train": None, "bd_test": _Wrapped(_Bd(d.bd_test))}
'''


def _fake_backdoorbench(root: Path, loader_source: str) -> None:
    (root / "defense").mkdir(parents=True)
    (root / "utils").mkdir()
    (root / "utils" / "__init__.py").write_text("")
    (root / "utils" / "save_load_attack.py").write_text(textwrap.dedent(loader_source))


@pytest.fixture
def isolated_imports():
    yield
    for mod in ("utils", "utils.save_load_attack"):
        sys.modules.pop(mod, None)


def test_backdoorbench_loader_is_used_from_a_backdoorbench_root(tmp_path, monkeypatch, isolated_imports, capsys):
    _fake_backdoorbench(tmp_path, FAKE_LOADER)
    attack, _ = bb.make_record(tmp_path, "cifar10", on_disk=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # as `python -m sau_plugin` from the BackdoorBench root does
    assert main(bb.cli_args(tmp_path, "cifar10", "--loader", "backdoorbench", "--defense_name", "viabb")) == 0
    assert Path("BACKDOORBENCH_LOADER_USED").read_text().endswith("attack_result.pt")
    via_bb = check_outputs(attack / "defense" / "viabb", "viabb", 1, 60)
    assert main(bb.cli_args(tmp_path, "cifar10", "--loader", "standalone", "--defense_name", "alone")) == 0
    alone = check_outputs(attack / "defense" / "alone", "alone", 1, 60)
    assert via_bb["loader"] == "backdoorbench" and alone["loader"] == "standalone"
    assert via_bb["final"] == alone["final"] and via_bb["no_defense"] == alone["no_defense"]


def test_auto_loader_falls_back_and_explicit_backdoorbench_loader_explains(tmp_path, monkeypatch, isolated_imports, capsys):
    _fake_backdoorbench(tmp_path, "raise ImportError('torchvision is not installed')\n")
    attack, _ = bb.make_record(tmp_path, "cifar10")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(bb.cli_args(tmp_path, "cifar10", "--loader", "backdoorbench")) == 2
    err = capsys.readouterr().err
    assert "torchvision is not installed" in err and "--loader standalone" in err
    assert not (attack / "defense").exists()
    assert main(bb.cli_args(tmp_path, "cifar10")) == 0  # auto
    assert json.loads((attack / "defense" / "sau" / "sau_result.json").read_text())["loader"] == "standalone"


@pytest.mark.slow
def test_install_into_writes_a_working_launcher_and_never_clobbers(tmp_path, capsys):
    root = tmp_path / "BackdoorBench"
    assert main(["install-into", str(root)]) == 2
    assert "does not look like a BackdoorBench checkout" in capsys.readouterr().err
    _fake_backdoorbench(root, "raise ImportError('torchvision is not installed')\n")
    assert main(["install-into", str(root)]) == 0
    launcher = root / "defense" / "sau_plugin.py"
    yamls = sorted(p.name for p in (root / "config" / "defense" / "sau_plugin").glob("*.yaml"))
    assert yamls == ["cifar10.yaml", "cifar100.yaml", "config.yaml", "gtsrb.yaml", "tiny.yaml"]
    assert launcher.read_text().startswith(MARKER)
    assert main(["install-into", str(root)]) == 0  # its own files are updated
    foreign = root / "config" / "defense" / "sau_plugin" / "cifar10.yaml"
    foreign.write_text("device: cpu\n")
    assert main(["install-into", str(root)]) == 2
    assert "not written by sau-plugin" in capsys.readouterr().err and foreign.read_text() == "device: cpu\n"
    foreign.unlink()
    assert main(["install-into", str(root)]) == 0

    attack, _ = bb.make_record(root, "cifar10")
    env = dict(os.environ, PYTHONPATH=str(bb.REPO), OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "./defense/sau_plugin.py", "--result_file", "attack", "--yaml_path",
                          "./config/defense/sau_plugin/cifar10.yaml", "--dataset", "cifar10", "--device", "cpu",
                          "--amp", "False", "--n_rounds", "1", "--ratio", "0.5", "--batch_size", "16", "--no_progress"],
                         cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    check_outputs(attack / "defense" / "sau_plugin", "sau_plugin", 1, 60)

    # The launcher runs from the BackdoorBench root with that root on Python's path: BackdoorBench's loader imports.
    (root / "utils" / "save_load_attack.py").write_text(textwrap.dedent(FAKE_LOADER))
    run = subprocess.run([sys.executable, "./defense/sau_plugin.py", "--result_file", "attack", "--dataset", "cifar10",
                          "--yaml_path", "./config/defense/sau_plugin/cifar10.yaml", "--loader", "backdoorbench",
                          "--device", "cpu", "--n_rounds", "1", "--ratio", "0.5", "--batch_size", "16", "--no_progress",
                          "--defense_name", "viabb"], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert check_outputs(attack / "defense" / "viabb", "viabb", 1, 60)["loader"] == "backdoorbench"


@pytest.mark.parametrize("constant", [bb.TARGET, 3])
def test_no_defense_figures_follow_their_definitions(tmp_path, constant):
    """A model that always answers ``constant``: ACC = share of that class in the clean test
    split, ASR = 1 iff it is the target, R-ACC = share of that class among the poisoned
    samples' true labels (target-class samples are not in the poisoned set)."""
    model = bb.tiny_model("cifar10")
    with torch.no_grad():
        model.linear.weight.zero_()
        model.linear.bias.copy_(torch.nn.functional.one_hot(torch.tensor(constant), 10).float() * 100)
    attack, _ = bb.make_record(tmp_path, "cifar10", model=model, on_disk=True)
    assert main(bb.cli_args(tmp_path, "cifar10", "--n_rounds", "0")) == 0
    info = json.loads((attack / "defense" / "sau" / "sau_result.json").read_text())
    labels = load_split("cifar10", tmp_path / "data" / "cifar10", train=False).labels
    poisoned = labels[labels != bb.TARGET]
    assert info["no_defense"] == info["final"] == {
        "test_acc": float((labels == constant).mean()), "test_asr": float(constant == bb.TARGET),
        "test_ra": float((poisoned == constant).mean())}
    assert info["der"] == 50.0  # nothing changed: (0 - 0 + 1) / 2
    out = attack / "defense" / "sau"  # no epoch, no row: BackdoorBench's sau.py writes no sau_df.csv either
    assert not (out / "sau_df.csv").exists() and not (out / "sau_df_summary.csv").exists()
    assert (out / "defense_result.pt").is_file() and info["epochs_run"] == 0


def test_log_level_debug_logs_shared_pgd_diagnostics_per_batch(tmp_path):
    attack, _ = bb.make_record(tmp_path, "cifar10")
    assert main(bb.cli_args(tmp_path, "cifar10", "--log_level", "debug", "--norm_type", "Reg")) == 0
    (log_file,) = (attack / "defense" / "sau" / "log").glob("*.log")
    lines = [line for line in log_file.read_text().splitlines() if "shared PGD:" in line]
    assert len(lines) == 2  # 30 clean samples, batch 16, one epoch
    assert all("[DEBUG   ] [sau_plugin.core.pgd]" in line and "fooled h " in line and "eps norm" in line for line in lines)
    info = json.loads((attack / "defense" / "sau" / "sau_result.json").read_text())
    assert info["config"]["norm_type"] == "Reg"


@pytest.mark.parametrize("variant, stored", [("ft", "ft"), ("c+d", "at")])
def test_variant_flag_reaches_the_run(tmp_path, variant, stored):
    attack, _ = bb.make_record(tmp_path, "cifar10")
    assert main(bb.cli_args(tmp_path, "cifar10", "--variant", variant, "--lr_scheduler", "none")) == 0
    info = json.loads((attack / "defense" / "sau" / "sau_result.json").read_text())
    assert info["variant"] == stored and info["config"]["lr_scheduler"] == "none"


def test_overwrite_removes_every_earlier_result_file_before_a_failing_rerun(tmp_path, monkeypatch):
    # The run's files are named in one place (OutputDir); --overwrite deletes all of them, plots included,
    # so a re-run that fails leaves no earlier result that could be taken for its own.
    from sau_plugin import SAUConfig, Unlearner
    from sau_plugin.run.outputs import OutputDir

    attack, _ = bb.make_record(tmp_path, "cifar10")
    assert main(bb.cli_args(tmp_path)) == 0
    out = OutputDir.of(SAUConfig(result_file=attack.name, record_dir=str(tmp_path / "record")))
    produced = {p for p in out.out.rglob("*") if p.is_file() and p.parent != out.log}
    assert produced == set(out.result_files())  # every file a run leaves (besides its log) is named there
    (out.out / "notes.txt").write_text("mine")

    def broken_fit(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(Unlearner, "fit", broken_fit)
    with pytest.raises(RuntimeError):
        main(bb.cli_args(tmp_path, "cifar10", "--overwrite"))
    assert not any(p.exists() for p in out.result_files())
    assert (out.out / "notes.txt").read_text() == "mine"
