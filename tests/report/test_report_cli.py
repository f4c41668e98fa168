"""``sau-plugin report`` end to end on a synthetic record tree, and ``--reevaluate`` with a stub reader."""

from __future__ import annotations

import csv
import io
import types

import numpy as np
import pandas as pd
import pytest
import torch

from sau_plugin.backdoorbench import evalsets
from sau_plugin.backdoorbench.evalsets import EvalSets
from sau_plugin.cli import main
from sau_plugin.models import create_model

from tests.helpers.records import RecordTree


@pytest.fixture()
def record(tmp_path):
    t = RecordTree(tmp_path / "record")
    t.attack("badnet_0_1", 0.9132, 0.9503, 0.0467)
    t.attack("blended_0_1", 0.9347, 0.9992, 0.0008)
    for attack, sau, nc in (("badnet_0_1", (0.8931, 0.0153, 0.8881), (0.8905, 0.0127, 0.8916)),
                            ("blended_0_1", (0.9096, 0.0614, 0.6489), (0.9347, 0.9992, 0.0008))):
        t.sau(attack, *sau)
        t.nc(attack, *nc)
    torch.save({"dataset": "cifar10", "model": "preactresnet18", "attack": "badnet", "pratio": 0.1,
                "attack_label_trans": "all2one"}, t.root / "badnet_0_1" / "info.pickle")
    return t.root


def run_cli(capsys, *argv):
    code = main(["report", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_markdown_default_and_labels(record, capsys):
    code, out, _ = run_cli(capsys, "--record_dir", str(record), "--attacks", "badnet_0_1=BadNets,blended_0_1=Blended",
                           "--defenses", "nc", "sau", "--caption", "Table 2")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "Table 2"
    assert lines[2] == "| Defense | No Defense |  |  |  | NC |  |  |  | SAU |  |  |  |"
    assert lines[5] == ("| BadNets | 91.32 | 95.03 | 4.67 | N/A | <u>89.05</u> | **1.27** | **89.16** | <u>95.74</u> "
                        "| **89.31** | <u>1.53</u> | <u>88.81</u> | **95.75** |")
    # NC found nothing on Blended (figures of the unchanged model): DER exactly 50
    assert lines[6] == ("| Blended | 93.47 | 99.92 | 0.08 | N/A | **93.47** | <u>99.92</u> | <u>0.08</u> | <u>50.00</u> "
                        "| <u>90.96</u> | **6.14** | **64.89** | **95.64** |")
    assert lines[7].startswith("| Average |")


def test_default_discovers_attacks_and_lists_missing_defenses(record, capsys):
    code, out, _ = run_cli(capsys, "--record_dir", str(record))
    assert code == 0
    assert "| badnet_0_1 |" in out and "| blended_0_1 |" in out
    assert "| Defense | No Defense |  |  |  | ANP |  |  |  | FP |  |  |  | NC |  |  |  |" in out
    assert "- badnet_0_1/defense/anp: not run (no folder)" in out


def test_csv_and_latex_formats(record, capsys, tmp_path):
    code, out, err = run_cli(capsys, "--record_dir", str(record), "--attacks", "badnet_0_1=BadNets", "lf=LF",
                             "--defenses", "sau", "--format", "csv")
    assert code == 0
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["Attack", "No Defense ACC", "No Defense ASR", "No Defense R-ACC", "No Defense DER",
                       "SAU ACC", "SAU ASR", "SAU R-ACC", "SAU DER"]
    assert rows[1] == ["BadNets", "91.32", "95.03", "4.67", "N/A", "89.31", "1.53", "88.81", "95.75"]
    assert rows[2] == ["LF"] + ["missing"] * 3 + ["N/A"] + ["missing"] * 4
    assert rows[3][0] == "Average" and rows[3][5] == "missing"
    assert "note: lf: no such attack folder" in err
    out_file = tmp_path / "t.tex"
    code, out, _ = run_cli(capsys, "--record_dir", str(record), "--defenses", "sau", "--format", "latex",
                           "-o", str(out_file))
    assert code == 0 and out == ""
    tex = out_file.read_text()
    assert tex.startswith("\\begin{table}") and "badnet\\_0\\_1 & 91.32 & 95.03 & 4.67 & N/A &" in tex


BB_HEADER = ",dataset,backbone,attack_name,defense_name,ratio,test_acc,test_asr,test_ra"
# A sample in the exact form of BackdoorBench's leaderboard data (its website's static/data/results.csv):
# unnamed index, fractions at full precision, empty cells for runs without figures.
BB_SAMPLE = "\n".join([
    BB_HEADER,
    "0,cifar10,preactresnet18,badnet,no defense,0.1,0.9132,0.9503,0.0467",
    "1,cifar10,preactresnet18,badnet,i-bau,0.1,0.8918999791145325,0.0152222223207354,0.8863333463668823",
    "2,cifar10,preactresnet18,inputaware,ft,0.05,0.9121,0.0731,0.8633333333333333",
    "3,cifar10,vgg19_bn,blended,no defense,0.1,,,",
    "4,gtsrb,preactresnet18,badnet,nc,0.001,0.9748218655586244,0.0,0.9749403595924376",
]) + "\n"


def test_leaderboard_rows_are_backdoorbench_rows(record, capsys, tmp_path):
    board = tmp_path / "board.csv"
    args = ["--record_dir", str(record), "--attacks", "badnet_0_1", "blended_0_1=Blended", "--defenses", "sau,nc",
            "--leaderboard", str(board), "--dataset", "cifar10", "--model", "preactresnet18", "--pratio", "0.10"]
    assert run_cli(capsys, *args)[0] == 0
    lines = board.read_text().splitlines()
    assert lines[0] == BB_HEADER
    rows = list(csv.reader(lines[1:]))
    assert [r[0] for r in rows] == [str(i) for i in range(6)]  # (no defense, sau, nc) x 2 attacks
    # badnet_0_1 has info.pickle (BackdoorBench's names); blended_0_1 takes the command line's, its folder name
    assert rows[0] == ["0", "cifar10", "preactresnet18", "badnet", "no defense", "0.1", "0.9132", "0.9503", "0.0467"]
    assert rows[1] == ["1", "cifar10", "preactresnet18", "badnet", "sau", "0.1", "0.8931", "0.0153", "0.8881"]
    assert rows[3][1:6] == ["cifar10", "preactresnet18", "blended_0_1", "no defense", "0.1"]  # not the label
    assert all(0.0 <= float(v) <= 1.0 for r in rows for v in r[6:])


def test_leaderboard_extras_hold_what_backdoorbench_has_no_column_for(record, capsys, tmp_path):
    extras = tmp_path / "extras.csv"
    assert run_cli(capsys, "--record_dir", str(record), "--attacks", "badnet_0_1", "--defenses", "sau,ep",
                   "--leaderboard_extras", str(extras))[0] == 0
    rows = list(csv.DictReader(extras.read_text().splitlines()))
    assert list(rows[0]) == ["dataset", "backbone", "attack_name", "defense_name", "ratio", "attack_label_trans",
                             "der", "status", "record", "source"]
    by_defense = {r["defense_name"]: r for r in rows}
    assert by_defense["no defense"]["der"] == "" and by_defense["no defense"]["status"] == "ok"
    assert float(by_defense["sau"]["der"]) == pytest.approx(0.957450)  # eq. (14) as a fraction
    assert by_defense["sau"]["attack_label_trans"] == "all2one" and by_defense["sau"]["record"] == "badnet_0_1"
    assert by_defense["sau"]["source"] == "badnet_0_1/defense/sau/sau_df_summary.csv, row last"
    assert by_defense["ep"]["status"] == "missing" and "not run" in by_defense["ep"]["source"]


def test_leaderboard_rows_append_to_backdoorbenchs_results_csv_as_one_table(record, capsys, tmp_path):
    board = tmp_path / "results.csv"
    board.write_text(BB_SAMPLE)
    args = ["--record_dir", str(record), "--attacks", "badnet_0_1", "blended_0_1", "--defenses", "sau,nc,i-bau",
            "--leaderboard", str(board), "--dataset", "cifar10", "--model", "preactresnet18", "--pratio", "0.1"]
    assert run_cli(capsys, *args)[0] == 0
    text = board.read_text()
    sample_rows = BB_SAMPLE.splitlines()[1:]
    lines = text.splitlines()
    # BackdoorBench's rows stay byte for byte, except the one key the plugin re-measured (replaced in place)
    assert lines[0] == BB_HEADER and lines[1] == "0,cifar10,preactresnet18,badnet,no defense,0.1,0.9132,0.9503,0.0467"
    assert lines[2] == sample_rows[1]  # our badnet i-bau run has no figures: it never erases BackdoorBench's
    assert lines[3:6] == sample_rows[2:5]
    board_df = pd.read_csv(board, index_col=0)
    sample_df = pd.read_csv(io.StringIO(BB_SAMPLE), index_col=0)
    assert list(board_df.columns) == list(sample_df.columns)
    assert board_df.index.tolist() == list(range(len(board_df)))  # the index continues: one table
    assert dict(board_df.dtypes) == dict(sample_df.dtypes)  # object names, float ratios and fractions
    assert len(board_df) == 5 + 2 * 4 - 2  # badnet: no defense and i-bau already there
    ours = board_df.iloc[5:]
    assert set(ours["defense_name"]) == {"no defense", "sau", "nc", "i-bau"}
    assert set(ours["attack_name"]) == {"badnet", "blended_0_1"} and set(ours["ratio"]) == {0.1}
    figures = ours[["test_acc", "test_asr", "test_ra"]].to_numpy().ravel()
    figures = figures[~np.isnan(figures)]
    assert len(figures) == 3 * 5 and ((figures >= 0) & (figures <= 1)).all()
    assert ours[ours["defense_name"] == "i-bau"][["test_acc", "test_asr", "test_ra"]].isna().all().all()
    # running it again changes nothing: one row per key
    assert run_cli(capsys, *args)[0] == 0
    assert board.read_text() == text
    # pandas can append the plugin's rows itself, too
    both = pd.concat([sample_df, ours], ignore_index=True)
    assert dict(both.dtypes) == dict(sample_df.dtypes)


def test_leaderboard_one_row_per_run_whatever_the_table_label(record, capsys, tmp_path):
    board = tmp_path / "board.csv"
    for label in ("BadNets", "BadNets 10%"):  # Table 2 and Table 4 show the same run under two labels
        assert run_cli(capsys, "--record_dir", str(record), "--attacks", f"badnet_0_1={label}", "--defenses", "sau",
                       "--leaderboard", str(board))[0] == 0
    rows = list(csv.DictReader(board.read_text().splitlines()))
    assert [(r["attack_name"], r["defense_name"]) for r in rows] == [("badnet", "no defense"), ("badnet", "sau")]


def test_leaderboard_label_transforms_other_than_all2one_are_named_apart(record, capsys):
    torch.save({"dataset": "cifar10", "model": "preactresnet18", "attack": "badnet", "pratio": 0.1,
                "attack_label_trans": "all2all"}, record / "blended_0_1" / "info.pickle")
    code, out, _ = run_cli(capsys, "--record_dir", str(record), "--attacks", "badnet_0_1,blended_0_1",
                           "--defenses", "sau", "--leaderboard", "-", "-o", str(record / "table.md"))
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["attack_name"] for r in rows] == ["badnet", "badnet", "badnet_all2all", "badnet_all2all"]


def test_leaderboard_nan_run_has_empty_cells_and_status_nan(record, capsys):
    from tests.helpers.records import RecordTree

    RecordTree(record).sau("blended_0_1", 0.9, float("nan"), 0.6)
    code, out, _ = run_cli(capsys, "--record_dir", str(record), "--attacks", "blended_0_1", "--defenses", "sau",
                           "--leaderboard", "-", "--leaderboard_extras", "-", "-o", str(record / "table.md"))
    board, extras = out.split("dataset,backbone,attack_name,defense_name,ratio,attack_label_trans")
    rows = list(csv.DictReader(io.StringIO(board)))
    assert (rows[1]["test_acc"], rows[1]["test_asr"], rows[1]["test_ra"]) == ("0.9", "", "0.6")
    extra = list(csv.reader(io.StringIO(extras)))[2]
    assert extra[5:8] == ["", "", "nan"]  # no label transform known, DER nan -> empty, status nan


def test_leaderboard_refuses_a_file_in_another_format(record, capsys, tmp_path):
    board = tmp_path / "old.csv"
    board.write_text("dataset,model,attack,attack_label_trans,pratio,defense,ACC,ASR,R-ACC,DER,status,record,source\n")
    code, _, err = run_cli(capsys, "--record_dir", str(record), "--defenses", "sau", "--leaderboard", str(board))
    assert code == 2 and err.count("\n") == 1
    assert "does not have the expected columns (,dataset,backbone,attack_name,defense_name,ratio,test_acc" in err
    assert board.read_text().startswith("dataset,model,attack")  # left as it was


def test_errors_are_one_line_exit_2(record, capsys, tmp_path):
    code, _, err = run_cli(capsys, "--record_dir", str(tmp_path / "nope"))
    assert code == 2 and err.startswith("error: record folder") and err.count("\n") == 1
    code, _, err = run_cli(capsys, "--record_dir", str(record), "--defenses", "sau,sau")
    assert code == 2 and "listed more than once: sau" in err
    code, _, err = run_cli(capsys, "--record_dir", str(record), "--defenses", "none")
    assert code == 2 and "always the first column" in err


# ------------------------------------------------------------------------------------------------------------
# --reevaluate, with the record reader replaced by a stub (exact cells); tests/report/test_report_reevaluate.py runs the real one

def constant_model_state(num_classes: int, predict: int, width: int = 4):
    """State of a 1-channel PreAct-ResNet18 that predicts ``predict`` for every input."""
    model = create_model("preactresnet18", num_classes, in_channels=1, width=width)
    state = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    state["linear.bias"][predict] = 1.0
    return state


@pytest.fixture()
def stub_record(monkeypatch):
    """The record reader replaced: fixed test sets, and no attacked model on offer."""
    y_clean = torch.tensor([0, 1, 2, 2, 2, 1, 0, 2])
    y_bd = torch.zeros(6, dtype=torch.long)  # all-to-one, target 0
    y_orig = torch.tensor([1, 2, 2, 1, 1, 2])
    stub = types.SimpleNamespace(calls=[])

    def load_eval_sets(attack_dir):
        stub.calls.append(attack_dir.name)
        return EvalSets(torch.rand(8, 1, 8, 8), y_clean, torch.rand(6, 1, 8, 8), y_bd, y_orig, (0.5,), (0.5,))

    monkeypatch.setattr(evalsets, "load_eval_sets", load_eval_sets)
    monkeypatch.setattr(evalsets, "load_attack_model", None)
    return stub


def save_defense(record, attack, name, state, model_name="preactresnet18"):
    d = record / attack / "defense" / name
    d.mkdir(parents=True, exist_ok=True)
    torch.save({"model_name": model_name, "num_classes": 3, "model": state}, d / "defense_result.pt")


def test_reevaluate_measures_each_defense_result(record, capsys, stub_record):
    save_defense(record, "badnet_0_1", "sau", constant_model_state(3, predict=2))  # ACC 4/8, ASR 0, RA 3/6
    # FP-style: pruning left on the last layer, saved from DataParallel
    state = constant_model_state(3, predict=0)
    state["linear.weight_orig"] = state.pop("linear.weight")
    state["linear.weight_mask"] = torch.ones_like(state["linear.weight_orig"])
    save_defense(record, "badnet_0_1", "fp", {f"module.{k}": v for k, v in state.items()})
    save_defense(record, "badnet_0_1", "nc", constant_model_state(3, predict=1))
    code, out, _ = run_cli(capsys, "--record_dir", str(record), "--attacks", "badnet_0_1=BadNets",
                           "--defenses", "fp,nc,sau,i-bau", "--reevaluate", "--block_size", "0")
    assert code == 0
    assert stub_record.calls == ["badnet_0_1"]  # test sets read once per attack
    row = next(line for line in out.splitlines() if line.startswith("| BadNets"))
    cells = [c.strip() for c in row.strip("|").split("|")][1:]
    # no load_attack_model in the stub: No Defense keeps the CSV figures, and says so
    assert cells[0:4] == ["91.32", "95.03", "4.67", "N/A"]
    assert "badnet_0_1: No Defense figures read from attack_df_summary.csv, not re-evaluated" in out
    fp, nc, sau, ibau = cells[4:8], cells[8:12], cells[12:16], cells[16:20]
    assert fp[:3] == ["<u>25.00</u>", "100.00", "0.00"]  # predicts the target 0 everywhere
    assert nc[:3] == ["<u>25.00</u>", "**0.00**", "**50.00**"]  # predicts 1 everywhere
    assert sau[:3] == ["**50.00**", "**0.00**", "**50.00**"]  # predicts 2 everywhere
    # SAU's CSV said 89.31 / 1.53: re-evaluation replaced it
    assert sau[3] == "**" + f"{100 * (0.9503 - 0.0 - (0.9132 - 0.5) + 1) / 2:.2f}" + "**"
    assert ibau == ["missing"] * 4
    assert "badnet_0_1/defense/i-bau: not run (no folder)" in out
    assert "badnet_0_1/defense/nc: re-evaluated; caveat: when NC detects a backdoor" in out


def test_reevaluate_uses_attack_model_when_the_reader_offers_it(record, capsys, stub_record, monkeypatch):
    monkeypatch.setattr(evalsets, "load_attack_model", lambda d: ("preactresnet18", 3, constant_model_state(3, predict=0)))
    save_defense(record, "badnet_0_1", "sau", constant_model_state(3, predict=2))
    code, out, _ = run_cli(capsys, "--record_dir", str(record), "--attacks", "badnet_0_1", "--defenses", "sau",
                           "--reevaluate", "--format", "csv")
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[1][1:5] == ["25.00", "100.00", "0.00", "N/A"]
    # DER against the re-evaluated No Defense: (1 - 0 - max(0, 0.25 - 0.5) + 1) / 2
    assert rows[1][5:9] == ["50.00", "0.00", "50.00", "100.00"]


def test_reevaluate_reads_no_test_set_when_nothing_is_saved(record, capsys, stub_record):
    (record / "badnet_0_1" / "defense" / "sau" / "defense_result.pt").unlink()  # CSV only
    code, out, _ = run_cli(capsys, "--record_dir", str(record), "--attacks", "badnet_0_1", "--defenses", "sau",
                           "--reevaluate")
    assert code == 0 and stub_record.calls == []
    assert "badnet_0_1/defense/sau: no defense_result.pt to re-evaluate" in out  # its CSV is not used instead


def test_reevaluate_renames_keys_by_position_as_backdoorbench_loads(record, capsys, stub_record):
    # the classifier saved under another name (same shapes, same order)
    state = {k.replace("linear.", "fc."): v for k, v in constant_model_state(3, predict=2).items()}
    save_defense(record, "badnet_0_1", "sau", state)
    code, out, _ = run_cli(capsys, "--record_dir", str(record), "--attacks", "badnet_0_1", "--defenses", "sau",
                           "--reevaluate", "--format", "csv")
    assert code == 0
    assert list(csv.reader(io.StringIO(out)))[1][5:8] == ["50.00", "0.00", "50.00"]  # predicts 2 everywhere


def test_reevaluate_reports_unusable_files(record, capsys, stub_record):
    d = record / "badnet_0_1" / "defense" / "sau"
    d.mkdir(parents=True, exist_ok=True)
    (d / "defense_result.pt").write_bytes(b"garbage")
    bad = constant_model_state(3, predict=0)
    bad.pop("linear.bias")
    save_defense(record, "badnet_0_1", "nc", bad)
    code, out, _ = run_cli(capsys, "--record_dir", str(record), "--attacks", "badnet_0_1", "--defenses", "sau,nc",
                           "--reevaluate")
    assert code == 0
    assert "badnet_0_1/defense/sau: " in out and "defense_result.pt at " in out and "is truncated or corrupt" in out
    assert "missing keys [linear.bias]" in out
