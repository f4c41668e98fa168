"""``defend --risk_every K`` writes the risk CSV and the Figure 4 plot, and sau_result.json
records the chain check; ``--target_label estimate`` records the estimate."""

import json

import pandas as pd

from sau_plugin.cli import main
from sau_plugin.run.risk_report import RISK_COLUMNS
from tests.helpers import bb


def test_risk_files_and_chain_in_the_result(tmp_path):
    bb.make_record(tmp_path)
    args = bb.cli_args(tmp_path, "cifar10", "--n_rounds", "2", "--risk_every", "2", "--target_label", "estimate")
    assert main(args) == 0
    out = tmp_path / "record" / "attack" / "defense" / "sau"
    df = pd.read_csv(out / "sau_risk_df.csv", index_col=0)
    assert list(df.columns) == RISK_COLUMNS
    assert df["epoch"].tolist() == [0, 2]  # before unlearning and every 2nd epoch
    png = (out / "sau_risk_plots.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    result = json.loads((out / "sau_result.json").read_text())
    target = result["target_label"]
    assert target["setting"] == "estimate" and 0 <= target["used"] < 10
    assert sum(target["counts"].values()) > 0
    chain = result["risk_chain"]
    assert chain["points"] == 2
    held = [bool(v) for v in df["chain"]]
    assert chain["chain_held_every_epoch"] == all(held)
    assert chain["chain_failed_at_epochs"] == [int(e) for e, h in zip(df["epoch"], held) if not h]
    assert "tchain_held_every_epoch" in chain  # a targeted run reports R_tsub in the chain
    assert (df["risk_tsub"] <= df["risk_sub"] + 1e-12).all() and (df["risk_sub"] <= df["risk_adv"] + 1e-12).all()
    # the final ASR of the csv is the backdoor risk of the last measured epoch
    last = pd.read_csv(out / "sau_df.csv", index_col=0).iloc[-1]
    assert abs(df["risk_bd"].iloc[-1] - last["test_asr"]) < 1e-9
    log = next((out / "log").glob("*.log")).read_text()
    assert "target label estimated" in log and "risk chain" in log
    # every file the run leaves is named by OutputDir, and --overwrite removes the risk files too
    from sau_plugin import SAUConfig
    from sau_plugin.run.outputs import OutputDir

    paths = OutputDir.of(SAUConfig(result_file="attack", record_dir=str(tmp_path / "record")))
    produced = {p for p in out.rglob("*") if p.is_file() and p.parent != paths.log}
    assert produced == set(paths.result_files()) | set(paths.risk_files)
    assert main(bb.cli_args(tmp_path, "cifar10", "--overwrite")) == 0
    assert not any(p.exists() for p in paths.risk_files)


def test_without_the_flag_no_risk_files(tmp_path):
    bb.make_record(tmp_path)
    assert main(bb.cli_args(tmp_path, "cifar10")) == 0
    out = tmp_path / "record" / "attack" / "defense" / "sau"
    assert not list(out.glob("*risk*"))
    assert "risk_chain" not in json.loads((out / "sau_result.json").read_text())
