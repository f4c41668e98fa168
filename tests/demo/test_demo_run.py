"""The ``demo`` command: its plumbing with a stand-in defense, and end to end through the
defense run (``sau_plugin.run.run_defense``)."""

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from sau_plugin.cli import main
from sau_plugin.demo.attack import AttackSettings
from sau_plugin.demo.run import DEMO_YAML, demo, format_table, sau_config

pytest.importorskip("mlxtend")

TINY_ARGS = ["--attack_epochs", "1", "--width", "4", "--attack_batch_size", "256"]  # as test_demo_attack's record


def _record_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.getbasetemp() / "demo_ws" / "record"  # shared with test_demo_attack.py (reused)


def test_demo_config_is_the_yaml_pointed_at_the_record(tmp_path):
    cfg = sau_config(tmp_path / "record" / "badnet_demo", epochs=3, device="cpu")
    assert cfg.result_file == "badnet_demo" and cfg.record_dir == str(tmp_path / "record")
    assert cfg.dataset == "mnist" and cfg.device == "cpu" and cfg.n_rounds == 3 and cfg.overwrite
    assert cfg.yaml_path == str(DEMO_YAML) and cfg.num_workers == 0
    assert cfg.amp  # bf16 where the CPU has native bf16 (core/precision.py falls back to fp32 elsewhere)
    assert cfg.lr_scheduler_stepping == "epoch"  # the demo opts in to the stepped cosine schedule, explicitly
    assert sau_config(tmp_path / "r" / "x", device="cpu").n_rounds == 10  # the YAML's


def test_format_table():
    text = format_table({"test_acc": 0.98, "test_asr": 1.0, "test_ra": 0.0},
                        {"test_acc": 0.97, "test_asr": 0.01, "test_ra": 0.95}, 99.0, 40.0, 60.5)
    no_def, sau = text.splitlines()[2:]
    assert no_def.split() == ["No", "defense", "98.00", "100.00", "0.00", "-", "40.0", "s"]
    assert sau.split() == ["SAU", "97.00", "1.00", "95.00", "99.00", "60.5", "s"]


@dataclass
class FakeOutcome:
    output_dir: Path
    before: dict
    after: dict
    der: float
    timings: dict
    files: list = field(default_factory=list)


def test_demo_command_with_a_stand_in_defense(tmp_path_factory, monkeypatch, capsys):
    calls = []

    def run_defense(cfg, *, progress=True):
        calls.append(cfg)
        out = Path(cfg.record_dir) / cfg.result_file / "defense" / "sau"
        return FakeOutcome(out, {"test_acc": 0.9, "test_asr": 0.99, "test_ra": 0.01},
                           {"test_acc": 0.89, "test_asr": 0.02, "test_ra": 0.85}, 98.0,
                           {"load": 0.5, "unlearn": 2.0}, [out / "defense_result.pt"])

    monkeypatch.setattr("sau_plugin.demo.run.run_defense", run_defense)
    record_dir = _record_dir(tmp_path_factory)
    rc = main(["demo", *TINY_ARGS, "--epochs", "2", "--device", "cpu", "--record_dir", str(record_dir),
               "--no_progress"])
    assert rc == 0
    (cfg,) = calls
    assert cfg.result_file == "badnet_demo" and cfg.record_dir == str(record_dir) and cfg.n_rounds == 2
    out = capsys.readouterr().out
    assert "No defense" in out and "98.00" in out and "time per phase: attack" in out and "sau/unlearn 2.0 s" in out
    assert str(record_dir / "badnet_demo" / "attack_result.pt") in out
    assert str(record_dir / "badnet_demo" / "defense" / "sau" / "defense_result.pt") in out


@pytest.mark.slow
def test_demo_end_to_end_reduced(tmp_path_factory, capsys):
    record_dir = _record_dir(tmp_path_factory)
    rc = main(["demo", *TINY_ARGS, "--epochs", "1", "--device", "cpu", "--record_dir", str(record_dir),
               "--no_progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "No defense" in out and "SAU" in out
    sau_dir = record_dir / "badnet_demo" / "defense" / "sau"
    assert (sau_dir / "defense_result.pt").is_file()
    assert (sau_dir / "sau_df_summary.csv").is_file()


@pytest.mark.slow
@pytest.mark.skipif(int(torch.__version__.split(".")[0]) < 2,
                    reason="the demo's bars are for the README's install (torch 2.x); on BackdoorBench's torch 1.11 "
                           "the demo runs fp32 and its SAU ended at ASR 1.22% in a measured run, over the 1% bar")
def test_demo_full_size_meets_its_quality_bars(tmp_path):
    """The demo at its defaults: a real backdoor, then SAU removes it at little cost. Its speed is
    measured by bench_scripts/demo_time.py, never asserted."""
    result = demo(AttackSettings(), tmp_path / "record", progress=False)
    before, after = result.defense.before, result.defense.after
    assert before["test_acc"] >= 0.95 and before["test_asr"] >= 0.90, before
    assert round(100 * after["test_asr"], 6) <= 1.0, after  # percent, rounded: 9 of 900 is exactly 1%
    assert round(100 * (before["test_acc"] - after["test_acc"]), 6) <= 2.5, (before, after)
