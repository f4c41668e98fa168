"""Without ``--dataset`` the attack result names the dataset (``clean_data``), and without
``--yaml_path`` that dataset's shipped YAML gives the defaults; an explicit ``--dataset``
that contradicts the record is one clear error."""

from __future__ import annotations

import argparse
import json
import logging

import pytest

from tests.helpers import bb
from sau_plugin.backdoorbench.defense import sau
from sau_plugin.cli import main


FAST = ["--device", "cpu", "--amp", "False", "--n_rounds", "1", "--ratio", "0.5", "--batch_size", "16",
        "--no_progress"]


def _defend(tmp_path, *extra: str) -> list:
    return ["defend", "--result_file", "attack", "--record_dir", str(tmp_path / "record"), *FAST, *extra]


def _result(tmp_path) -> dict:
    return json.loads((tmp_path / "record" / "attack" / "defense" / "sau" / "sau_result.json").read_text())


@pytest.mark.parametrize("dataset, yaml_name", [("gtsrb", "gtsrb.yaml"), ("mnist", "config.yaml")])
def test_the_record_names_the_dataset_and_its_yaml(tmp_path, capsys, dataset, yaml_name):
    bb.make_record(tmp_path, dataset, on_disk=True)
    assert main(_defend(tmp_path)) == 0
    result = _result(tmp_path)
    assert result["dataset"] == dataset and result["config"]["dataset"] == dataset
    # the shipped YAML of that dataset (mnist has none: BackdoorBench's generic config.yaml)
    assert result["config"]["yaml_path"].endswith(f"/{yaml_name}")


def test_tiny_gets_its_own_yaml_values(tmp_path, capsys):
    bb.make_record(tmp_path, "tiny", on_disk=True, data_kwargs={"val_layout": "annotations"})
    fast = [a for a in _defend(tmp_path) if a not in ("--n_rounds", "1")]
    assert main(fast + ["--epochs", "1"]) == 0  # --epochs sets n_rounds; without it tiny.yaml's 20 would run
    result = _result(tmp_path)
    assert result["dataset"] == "tiny" and result["config"]["yaml_path"].endswith("/tiny.yaml")
    assert result["config"]["n_rounds"] == 1 and result["epochs_run"] == 1


def test_an_explicit_dataset_that_contradicts_the_record_is_one_clear_error(tmp_path, capsys):
    attack, _ = bb.make_record(tmp_path, "mnist", on_disk=False)
    capsys.readouterr()
    assert main(_defend(tmp_path, "--dataset", "cifar10")) == 2
    err = capsys.readouterr().err
    assert err == ("error: --dataset cifar10 but the attack result was made on 'mnist'; pass --dataset mnist or "
                   "leave --dataset out (the record names its dataset)\n")
    assert not (attack / "defense").exists()


def test_an_explicit_dataset_that_agrees_is_used_with_its_yaml(tmp_path, capsys):
    bb.make_record(tmp_path, "cifar100", on_disk=False)
    assert main(_defend(tmp_path, "--dataset", "cifar100")) == 0
    assert _result(tmp_path)["config"]["yaml_path"].endswith("/cifar100.yaml")


def test_a_yaml_for_another_dataset_is_used_for_its_values_with_a_warning(tmp_path, capsys, caplog):
    bb.make_record(tmp_path, "mnist", on_disk=False)
    with caplog.at_level(logging.WARNING, logger="sau_plugin"):
        assert main(_defend(tmp_path, "--yaml_path", str(bb.yaml_for("cifar10")))) == 0
    assert "sets dataset 'cifar10', but the attack result was made on 'mnist': using 'mnist'" in caplog.text
    result = _result(tmp_path)
    assert result["dataset"] == "mnist" and result["config"]["yaml_path"] == str(bb.yaml_for("cifar10"))


def test_backdoorbenchs_class_interface_without_dataset(tmp_path):
    attack, _ = bb.make_record(tmp_path, "gtsrb", on_disk=False)
    parser = argparse.ArgumentParser()
    sau.add_arguments(parser)
    method = sau(parser.parse_args(["--record_dir", str(tmp_path / "record"), *FAST]))
    method.defense("attack")
    assert method.cfg.dataset == "gtsrb" and method.cfg.yaml_path.endswith("/gtsrb.yaml")
    assert method.outcome.output_dir == attack / "defense" / "sau"
