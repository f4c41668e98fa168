"""``report --reevaluate`` on a real record folder: the plugin's own reader, a real SAU run."""

import csv
import io

import pytest
import torch

from tests.helpers.bb import cli_args, make_record
from sau_plugin.backdoorbench.evalsets import load_attack_model, load_eval_sets
from sau_plugin.cli import main



@pytest.fixture(scope="module")
def defended(tmp_path_factory):
    base = tmp_path_factory.mktemp("reeval")
    attack_dir, model = make_record(base, "cifar10", attack="badnet")
    assert main(cli_args(base, "cifar10", attack="badnet")) == 0
    return base, attack_dir, model


def test_eval_sets_and_attack_model_come_from_the_record(defended):
    base, attack_dir, model = defended
    sets = load_eval_sets(attack_dir)
    assert sets.x_clean.dtype == torch.float32 and 0 <= float(sets.x_clean.min()) and float(sets.x_clean.max()) <= 1
    assert sets.x_clean.shape[1:] == sets.x_bd.shape[1:] and len(sets.y_bd) == len(sets.y_orig) == len(sets.x_bd)
    assert (sets.y_orig != sets.y_bd).all()  # all-to-one: target-class samples are not in the poisoned set
    name, k, state = load_attack_model(attack_dir)
    assert name == "preactresnet18" and k == 10
    assert all(torch.equal(state[key], v) for key, v in model.state_dict().items())  # module. prefix stripped


def test_reevaluated_figures_match_what_the_run_wrote(defended, capsys):
    base, attack_dir, _ = defended
    code = main(["report", "--record_dir", str(base / "record"), "--attacks", "badnet", "--defenses", "sau",
                 "--reevaluate", "--format", "csv"])
    out = capsys.readouterr().out
    assert code == 0
    row = next(r for r in csv.reader(io.StringIO(out)) if r and r[0] == "badnet")
    with open(attack_dir / "defense" / "sau" / "sau_df_summary.csv") as f:
        summary = {r[""]: r for r in csv.DictReader(f)}
    # the run evaluated the same model on the same sets: the re-evaluation agrees with its CSV
    for cell, col in zip(row[5:8], ("test_acc", "test_asr", "test_ra")):
        assert float(cell) == pytest.approx(100 * float(summary["last"][col]), abs=0.01)


def test_report_reads_a_real_runs_result_json_when_its_csv_is_gone(defended, capsys, tmp_path):
    import json
    import shutil

    base, attack_dir, _ = defended
    copy_dir = tmp_path / "record"
    shutil.copytree(base / "record" / "badnet", copy_dir / "badnet")
    (copy_dir / "badnet" / "defense" / "sau" / "sau_df_summary.csv").unlink()
    final = json.loads((copy_dir / "badnet" / "defense" / "sau" / "sau_result.json").read_text())["final"]
    assert main(["report", "--record_dir", str(copy_dir), "--attacks", "badnet", "--defenses", "sau", "--format", "csv"]) == 0
    row = next(r for r in csv.reader(io.StringIO(capsys.readouterr().out)) if r and r[0] == "badnet")
    assert [float(c) for c in row[5:8]] == pytest.approx([100 * final[k] for k in ("test_acc", "test_asr", "test_ra")], abs=0.01)
