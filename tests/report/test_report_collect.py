"""Per-defense readers: each baseline's final figures from where BackdoorBench really leaves them."""

from __future__ import annotations

import math

import pytest
import torch

from sau_plugin.report.collect import collect, discover_attacks, read_attack_info, read_defense, read_no_defense
from sau_plugin.report.readers import read_final_row
from sau_plugin.errors import RecordError

from tests.helpers.records import RecordTree, epoch_rows, metric_row, write_steps, write_summary

FIGS = (0.8123, 0.0345, 0.7012)


@pytest.fixture()
def tree(tmp_path):
    t = RecordTree(tmp_path / "record")
    t.attack("badnet", 0.9132, 0.9503, 0.0467)
    return t


def figures(run):
    assert run.found, run.notes
    return (run.figures.acc, run.figures.asr, run.figures.ra)


def test_no_defense_uses_last_row_not_valid_max(tree):
    run = read_no_defense(tree.root / "badnet")
    assert figures(run) == pytest.approx((0.9132, 0.9503, 0.0467))
    assert run.figures.source == "badnet/attack_df_summary.csv, row last"


def test_no_defense_falls_back_to_the_plugins_sau_result_json(tree):
    (tree.root / "badnet" / "attack_df_summary.csv").unlink()
    tree.sau("badnet", *FIGS, json_only=True)  # sau_result.json: no_defense 0.9 / 0.9 / 0.1
    run = read_no_defense(tree.root / "badnet")
    assert figures(run) == (0.9, 0.9, 0.1)
    assert run.figures.source == "badnet/defense/sau/sau_result.json, key no_defense"
    assert "as the plugin measured them before unlearning" in run.notes[0]
    (tree.root / "badnet" / "defense" / "sau" / "sau_result.json").write_text("{}")  # no figures anywhere
    gone = read_no_defense(tree.root / "badnet")
    assert not gone.found and "no attack_df_summary.csv" in gone.notes[0]


@pytest.mark.parametrize("kind,file,row", [
    ("anp", "anp_df_summary.csv", "0"),  # a one-row per-step table despite its name
    ("fp", "finetune_df_summary.csv", "last"),  # after fine-tuning, not the pruning log
    ("nad", "nad_df_summary.csv", "last"),  # the student, not nad_te (teacher)
    ("nc", "nc_df_summary.csv", "last"),
    ("ep", "ep_df_summary.csv", "0"),  # the chosen u, not the u sweep
    ("i-bau", "i-bau_df_summary.csv", "last"),
    ("sau", "sau_df_summary.csv", "last"),
])
def test_each_baseline_read_from_its_own_file(tree, kind, file, row):
    tree.defense(kind, "badnet", *FIGS)
    run = read_defense(tree.root / "badnet", kind)
    assert figures(run) == pytest.approx(FIGS)
    assert run.figures.source == f"badnet/defense/{kind}/{file}, row {row}"
    assert run.notes == ()


def test_nc_without_detection_writes_a_one_row_table(tree):
    tree.nc("badnet", *FIGS, detected=False)
    run = read_defense(tree.root / "badnet", "nc")
    assert figures(run) == pytest.approx(FIGS)
    assert run.figures.source.endswith("nc_df_summary.csv, row 0")


def test_fp_prune_log_only_for_a_finished_run_without_fine_tuning(tree):
    tree.fp("badnet", *FIGS, finetune=False, finished=True)
    run = read_defense(tree.root / "badnet", "fp")
    assert figures(run) == pytest.approx(FIGS)
    assert run.figures.source.endswith("prune_log_summary.csv, row last")


def test_fp_interrupted_before_fine_tuning_is_missing(tree):
    tree.fp("badnet", *FIGS, finetune=False, finished=False)
    run = read_defense(tree.root / "badnet", "fp")
    assert not run.found
    assert "did not finish" in run.notes[0]


def test_fp_prefers_fine_tuning_over_pruning_log(tree):
    tree.fp("badnet", *FIGS)  # prune log holds 0.2 / 0.9 / 0.05
    assert figures(read_defense(tree.root / "badnet", "fp")) == pytest.approx(FIGS)


def test_plugin_variant_names_and_json_fallback(tree):
    tree.sau("badnet", *FIGS, name="sau_l2")  # sau_l2_df_summary.csv
    tree.sau("badnet", 0.7, 0.1, 0.6, name="ft", csv_name="sau_df_summary.csv")
    tree.sau("badnet", 0.6, 0.2, 0.5, name="a+d", json_only=True)
    assert figures(read_defense(tree.root / "badnet", "sau_l2")) == pytest.approx(FIGS)
    assert figures(read_defense(tree.root / "badnet", "ft")) == pytest.approx((0.7, 0.1, 0.6))
    run = read_defense(tree.root / "badnet", "a+d")
    assert figures(run) == pytest.approx((0.6, 0.2, 0.5))
    assert run.figures.source == "badnet/defense/a+d/sau_result.json, key final"


def test_unknown_defense_single_summary_is_used_with_a_note(tree):
    d = tree.root / "badnet" / "defense" / "abl"
    write_summary(d / "whatever_df_summary.csv", epoch_rows(FIGS))
    run = read_defense(tree.root / "badnet", "abl")
    assert figures(run) == pytest.approx(FIGS)
    assert "read whatever_df_summary.csv" in run.notes[0]
    write_summary(d / "other_df_summary.csv", epoch_rows(FIGS))
    run = read_defense(tree.root / "badnet", "abl")
    assert not run.found and "none chosen" in run.notes[0]


def test_folder_without_figures_says_so_and_points_to_reevaluate(tree):
    d = tree.root / "badnet" / "defense" / "i-bau"
    d.mkdir(parents=True)
    (d / "defense_result.pt").write_bytes(b"x")
    run = read_defense(tree.root / "badnet", "i-bau")
    assert not run.found
    assert "no final figures found (looked for i-bau_df_summary.csv)" in run.notes[0]
    assert "--reevaluate" in run.notes[0]
    assert read_defense(tree.root / "badnet", "nad").notes == ("badnet/defense/nad: not run (no folder)",)


def test_unreadable_or_malformed_csv_is_missing_with_reason(tree):
    d = tree.root / "badnet" / "defense" / "i-bau"
    d.mkdir(parents=True)
    (d / "i-bau_df_summary.csv").write_text("")
    assert "unreadable" in read_defense(tree.root / "badnet", "i-bau").notes[0]
    write_steps(d / "i-bau_df_summary.csv", [{"clean_acc": 0.9, "bd_acc": 0.1}])
    note = read_defense(tree.root / "badnet", "i-bau").notes[0]
    assert "no column test_acc, test_asr, test_ra" in note and "clean_acc" in note
    write_steps(d / "i-bau_df_summary.csv", [metric_row("n/a", 0.1, 0.5)])
    assert "expected a number, found 'n/a'" in read_defense(tree.root / "badnet", "i-bau").notes[0]


def test_nan_values_read_as_nan_and_flagged(tree):
    tree.sau("badnet", 0.9, math.nan, 0.8)
    run = read_defense(tree.root / "badnet", "sau")
    acc, asr, ra = figures(run)
    assert (acc, ra) == pytest.approx((0.9, 0.8)) and math.isnan(asr)
    assert "reports NaN values" in run.notes[0]


def test_nan_earlier_in_the_run_keeps_the_final_figures_and_notes_it(tmp_path):
    rows = epoch_rows((0.9, 0.05, 0.8))
    rows[0]["clean_test_loss_avg_over_batch"] = "nan_value"
    path = write_summary(tmp_path / "x_df_summary.csv", rows)
    row, name, nan_seen = read_final_row(path)
    assert name == "last" and float(row["test_asr"]) == pytest.approx(0.05) and nan_seen


def test_discover_and_collect_order(tree, tmp_path):
    tree.attack("wanet", 0.9, 0.9, 0.1)
    (tree.root / "not_an_attack").mkdir()
    assert discover_attacks(tree.root) == ["badnet", "wanet"]
    with pytest.raises(RecordError, match="does not exist"):
        discover_attacks(tmp_path / "nope")
    res = collect(tree.root, [("wanet", "WaNet"), ("badnet", "BadNets")], ["sau"])
    assert [r.label for r in res] == ["WaNet", "BadNets"]


def test_attack_info_read_safely(tree):
    info = {"dataset": "cifar10", "model": "preactresnet18", "attack": "badnet", "pratio": 0.1,
            "attack_label_trans": "all2one", "img_size": (32, 32, 3), "terminal_info": ["./attack/badnet.py"]}
    torch.save(info, tree.root / "badnet" / "info.pickle")
    assert read_attack_info(tree.root / "badnet") == {"dataset": "cifar10", "model": "preactresnet18",
                                                      "attack": "badnet", "pratio": 0.1,
                                                      "attack_label_trans": "all2one"}

    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    torch.save({"dataset": Evil()}, tree.root / "badnet" / "info.pickle")
    assert read_attack_info(tree.root / "badnet") == {}  # refused by weights_only, never run
