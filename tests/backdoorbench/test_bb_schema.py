"""``<name>_df.csv`` and ``<name>_df_summary.csv`` byte for byte as BackdoorBench's defense/sau.py
writes them (``Metric_Aggregator`` of utils/trainer_cls.py at commit f02e353).

The expected texts are files BackdoorBench wrote, in its pinned environment (Python 3.8,
pandas 1.3.1, NumPy 1.21): its ``Metric_Aggregator`` fed the values below, and a real run
of its defense/sau.py. Their layout: an unnamed index column, one
row per epoch 0 .. N-1 and nothing else, floats in shortest round-trip form, NaN as the
string ``nan_value``; the summary's ``last`` / ``valid_max`` / ``exist_nan_value`` over
those rows only (an int ``epoch`` stays an int in both rows).
"""

import pytest

from sau_plugin.backdoorbench.metric_csv import summary_frame, write_csv
from sau_plugin.backdoorbench.results import METRIC_COLUMNS, defense_frame

HEADER = (",epoch,clean_test_loss_avg_over_batch,bd_test_loss_avg_over_batch,ra_test_loss_avg_over_batch,"
          "test_acc,test_asr,test_ra\n")

THREE_EPOCHS = [(0.6931471805599453, 2.302585092994046, 1.0986122886681098, 0.9132, 0.0153, 0.8881),
                (0.5, 3.25, 0.125, 0.8931, 0.1, 0.9),
                (0.41, 4.0, 0.2, 0.90125, 0.0234375, 0.875)]
THREE_EPOCHS_DF = HEADER + """\
0,0,0.6931471805599453,2.302585092994046,1.0986122886681098,0.9132,0.0153,0.8881
1,1,0.5,3.25,0.125,0.8931,0.1,0.9
2,2,0.41,4.0,0.2,0.90125,0.0234375,0.875
"""
THREE_EPOCHS_SUMMARY = HEADER + """\
last,2,0.41,4.0,0.2,0.90125,0.0234375,0.875
valid_max,2,0.6931471805599453,4.0,1.0986122886681098,0.9132,0.1,0.9
exist_nan_value,False,False,False,False,False,False,False
"""

NAN_EPOCHS = [(float("nan"), 1.5, 0.5, 0.5, 0.25, 0.75), (0.75, 1.25, 0.5, 0.625, 0.125, 0.875)]
NAN_EPOCHS_DF = HEADER + """\
0,0,nan_value,1.5,0.5,0.5,0.25,0.75
1,1,0.75,1.25,0.5,0.625,0.125,0.875
"""
NAN_EPOCHS_SUMMARY = HEADER + """\
last,1,0.75,1.25,0.5,0.625,0.125,0.875
valid_max,1,0.75,1.5,0.5,0.625,0.25,0.875
exist_nan_value,False,True,False,False,False,False,False
"""

# What BackdoorBench's own defense/sau.py wrote (its pinned environment, CPU, n_rounds 2) on a
# BadNets record made by its own attack: the plugin's writer must give the same bytes for
# these per-epoch values.
BB_RUN = [(1.1258922815322876, 6.205444693565369, 0.7158088088035583, 0.648, 0.0, 0.7622222222222222),
          (1.991236299276352, 8.463515758514404, 1.4139631688594818, 0.485, 0.0, 0.5533333333333333)]
BB_RUN_DF = HEADER + """\
0,0,1.1258922815322876,6.205444693565369,0.7158088088035583,0.648,0.0,0.7622222222222222
1,1,1.991236299276352,8.463515758514404,1.4139631688594818,0.485,0.0,0.5533333333333333
"""
BB_RUN_SUMMARY = HEADER + """\
last,1,1.991236299276352,8.463515758514404,1.4139631688594818,0.485,0.0,0.5533333333333333
valid_max,1,1.991236299276352,8.463515758514404,1.4139631688594818,0.648,0.0,0.7622222222222222
exist_nan_value,False,False,False,False,False,False,False
"""


def _history(values):
    # what Unlearner.fit returns: float epochs, extra training keys that must not reach the CSV
    return [{"epoch": float(e), **dict(zip(METRIC_COLUMNS, v)), "train_loss": 1.0, "time_eval_s": 0.1}
            for e, v in enumerate(values)]


@pytest.mark.parametrize("values, df_text, summary_text", [
    (THREE_EPOCHS, THREE_EPOCHS_DF, THREE_EPOCHS_SUMMARY),
    (NAN_EPOCHS, NAN_EPOCHS_DF, NAN_EPOCHS_SUMMARY),
    (BB_RUN, BB_RUN_DF, BB_RUN_SUMMARY),
], ids=["three-epochs", "nan-epoch", "backdoorbench-sau-run"])
def test_csvs_equal_backdoorbenchs_bytes(tmp_path, values, df_text, summary_text):
    df = defense_frame(_history(values))
    write_csv(df, tmp_path / "sau_df.csv")
    write_csv(summary_frame(df), tmp_path / "sau_df_summary.csv")
    assert (tmp_path / "sau_df.csv").read_text() == df_text
    assert (tmp_path / "sau_df_summary.csv").read_text() == summary_text
