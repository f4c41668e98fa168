"""The one writer of BackdoorBench's metric CSVs (``Metric_Aggregator``), for the defense and
the demo's attack: the three rules of ``last_and_valid_max`` written out here, no BackdoorBench
import."""

import math

from sau_plugin.backdoorbench.metric_csv import NAN_CELL, write_metric_csvs

HISTORY = [{"train_epoch_loss_avg_over_batch": 1.0986122886681098, "train_acc": 0.5, "test_acc": 0.9132,
            "test_asr": 0.0153},
           {"train_epoch_loss_avg_over_batch": 0.41, "train_acc": 0.75, "test_acc": 0.8931, "test_asr": 0.1}]
HEADER = ",train_epoch_loss_avg_over_batch,train_acc,test_acc,test_asr\n"


def test_a_nan_free_history_gives_the_demos_former_bytes(tmp_path):
    df, summary = write_metric_csvs(tmp_path, "attack", HISTORY)
    assert (df.name, summary.name) == ("attack_df.csv", "attack_df_summary.csv")
    assert df.read_text() == HEADER + "0,1.0986122886681098,0.5,0.9132,0.0153\n1,0.41,0.75,0.8931,0.1\n"
    assert summary.read_text() == HEADER + ("last,0.41,0.75,0.8931,0.1\n"
                                            "valid_max,1.0986122886681098,0.75,0.9132,0.1\n"
                                            "exist_nan_value,False,False,False,False\n")


def test_nan_cells_follow_backdoorbenchs_rules(tmp_path):
    history = [dict(HISTORY[0], train_acc=math.nan), dict(HISTORY[1], test_asr=math.nan)]
    df, summary = write_metric_csvs(tmp_path, "x", history, columns=["train_acc", "test_asr"])
    assert NAN_CELL == "nan_value"
    # NaN is written as the string nan_value
    assert df.read_text() == ",train_acc,test_asr\n0,nan_value,0.0153\n1,0.75,nan_value\n"
    lines = summary.read_text().splitlines()
    assert lines[0] == ",train_acc,test_asr"
    assert lines[1] == "last,0.75,nan_value"  # last = the last cell, nan_value included
    assert lines[2] == "valid_max,0.75,0.0153"  # valid_max ignores nan_value
    assert lines[3] == "exist_nan_value,True,True"
