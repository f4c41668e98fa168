"""``sau-plugin report`` end to end on a synthetic record tree, and ``--reevaluate`` with a stub reader."""

from __future__ import annotations

import csv
import io
import sys
import types

import pytest
import torch

from sau_plugin.cli import main
from sau_plugin.models import create_model
from sau_plugin.report import evaluate as ev

from _record_tree import RecordTree


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


def test_leaderboard_rows_and_merge(record, capsys, tmp_path):
    board = tmp_path / "board.csv"
    args = ["--record_dir", str(record), "--attacks", "badnet_0_1", "blended_0_1=Blended", "--defenses", "sau,nc",
            "--leaderboard", str(board), "--dataset", "cifar10", "--model", "preactresnet18", "--pratio", "0.1"]
    assert run_cli(capsys, *args)[0] == 0
    rows = list(csv.DictReader(board.read_text().splitlines()))
    assert len(rows) == 2 * 3  # (no defense, sau, nc) x 2 attacks
    first = rows[0]
    assert (first["dataset"], first["model"], first["attack"], first["attack_label_trans"], first["pratio"],
            first["defense"]) == ("cifar10", "preactresnet18", "badnet", "all2one", "0.1", "none")
    assert (first["ACC"], first["ASR"], first["DER"], first["status"]) == ("91.3200", "95.0300", "", "ok")
    sau = next(r for r in rows if r["record"] == "badnet_0_1" and r["defense"] == "sau")
    assert (sau["ACC"], sau["ASR"], sau["R-ACC"], sau["DER"]) == ("89.3100", "1.5300", "88.8100", "95.7450")
    blended = [r for r in rows if r["record"] == "blended_0_1"]
    assert {r["attack"] for r in blended} == {"Blended"}  # label given on the command line
    assert {r["dataset"] for r in blended} == {"cifar10"}  # no info.pickle: the --dataset fallback
    # a second run replaces rows with the same key and keeps the others
    with board.open("a") as f:
        f.write("gtsrb,vgg19,badnet,all2one,0.1,sau,97.0,1.0,40.0,90.0,ok,other,x\n")
    record_sau = record / "badnet_0_1" / "defense" / "sau" / "sau_df_summary.csv"
    record_sau.unlink()
    assert run_cli(capsys, *args)[0] == 0
    rows = list(csv.DictReader(board.read_text().splitlines()))
    assert len(rows) == 7
    sau = next(r for r in rows if r["record"] == "badnet_0_1" and r["defense"] == "sau")
    assert (sau["ACC"], sau["DER"], sau["status"]) == ("", "", "missing")  # never filled in
    assert "no final figures found" in sau["source"]
    assert any(r["dataset"] == "gtsrb" for r in rows)


def test_leaderboard_one_row_per_run_whatever_the_table_label(record, capsys, tmp_path):
    board = tmp_path / "board.csv"
    for label in ("BadNets", "BadNets 10%"):  # Table 2 and Table 4 show the same run under two labels
        assert run_cli(capsys, "--record_dir", str(record), "--attacks", f"badnet_0_1={label}", "--defenses", "sau",
                       "--leaderboard", str(board))[0] == 0
    rows = list(csv.DictReader(board.read_text().splitlines()))
    assert [(r["attack"], r["defense"]) for r in rows] == [("badnet", "none"), ("badnet", "sau")]


def test_leaderboard_nan_status(record, capsys):
    from _record_tree import RecordTree

    RecordTree(record).sau("blended_0_1", 0.9, float("nan"), 0.6)
    code, out, _ = run_cli(capsys, "--record_dir", str(record), "--attacks", "blended_0_1", "--defenses", "sau",
                           "--leaderboard", "-", "-o", str(record / "table.md"))
    rows = list(csv.DictReader(io.StringIO(out)))
    assert (rows[1]["ACC"], rows[1]["ASR"], rows[1]["DER"], rows[1]["status"]) == ("90.0000", "nan", "nan", "nan")


def test_errors_are_one_line_exit_2(record, capsys, tmp_path):
    code, _, err = run_cli(capsys, "--record_dir", str(tmp_path / "nope"))
    assert code == 2 and err.startswith("error: record folder") and err.count("\n") == 1
    code, _, err = run_cli(capsys, "--record_dir", str(record), "--defenses", "sau,sau")
    assert code == 2 and "listed more than once: sau" in err
    code, _, err = run_cli(capsys, "--record_dir", str(record), "--defenses", "none")
    assert code == 2 and "always the first column" in err


# ------------------------------------------------------------------------------------------------------------
# --reevaluate, with the record reader replaced by a stub (exact cells); tests/test_report_reevaluate.py runs the real one

def constant_model_state(num_classes: int, predict: int, width: int = 4):
    """State of a 1-channel PreAct-ResNet18 that predicts ``predict`` for every input."""
    model = create_model("preactresnet18", num_classes, in_channels=1, width=width)
    state = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    state["linear.bias"][predict] = 1.0
    return state


@pytest.fixture()
def stub_record(monkeypatch):
    y_clean = torch.tensor([0, 1, 2, 2, 2, 1, 0, 2])
    y_bd = torch.zeros(6, dtype=torch.long)  # all-to-one, target 0
    y_orig = torch.tensor([1, 2, 2, 1, 1, 2])
    module = types.ModuleType(ev.RECORD_MODULE)
    module.calls = []

    def load_eval_sets(attack_dir):
        module.calls.append(attack_dir.name)
        return (torch.rand(8, 1, 8, 8), y_clean, torch.rand(6, 1, 8, 8), y_bd, y_orig, (0.5,), (0.5,))

    module.load_eval_sets = load_eval_sets
    monkeypatch.setitem(sys.modules, ev.RECORD_MODULE, module)
    return module


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


def test_reevaluate_uses_attack_model_when_the_reader_offers_it(record, capsys, stub_record):
    stub_record.load_attack_model = lambda d: ("preactresnet18", 3, constant_model_state(3, predict=0))
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
    assert "badnet_0_1/defense/sau: " in out and "cannot be read safely" in out
    assert "missing keys [linear.bias]" in out


def test_reevaluate_without_the_record_reader_is_a_clear_error(record, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, ev.RECORD_MODULE, None)  # importing it now raises ModuleNotFoundError
    code, _, err = run_cli(capsys, "--record_dir", str(record), "--reevaluate")
    assert code == 2
    assert f"--reevaluate needs {ev.RECORD_MODULE}" in err

