"""Writers of BackdoorBench's standard defense outputs, all atomic.

``<name>_df.csv`` is what BackdoorBench's ``Metric_Aggregator.to_dataframe().to_csv``
writes in ``defense/sau.py``: an unnamed index column, then ``epoch`` and the six
metrics, one row per unlearning epoch 0 .. n_rounds - 1 and nothing else, NaN written as
``nan_value``. ``<name>_df_summary.csv`` has rows ``last``, ``valid_max``,
``exist_nan_value`` per column over those rows (BackdoorBench's ``last_and_valid_max``).
The model before unlearning has no row: its figures are in ``sau_result.json``
(``no_defense``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, List, Mapping, Sequence

import pandas as pd
import torch

from ..fileio import atomic_path, atomic_save, atomic_write_text
from . import metric_csv

LOSS_COLUMNS = ["clean_test_loss_avg_over_batch", "bd_test_loss_avg_over_batch", "ra_test_loss_avg_over_batch"]
FIGURE_COLUMNS = ["test_acc", "test_asr", "test_ra"]  # ACC, ASR, R-ACC
METRIC_COLUMNS = LOSS_COLUMNS + FIGURE_COLUMNS
DF_COLUMNS = ["epoch"] + METRIC_COLUMNS


def defense_frame(rows: Sequence[Mapping[str, float]]) -> pd.DataFrame:
    """One row per epoch in ``rows`` with BackdoorBench's columns (extra keys dropped), in
    ``Metric_Aggregator.to_dataframe``'s types: object columns holding int epochs and float
    metrics."""
    return metric_csv.metrics_frame([{"epoch": int(r["epoch"]), **{c: float(r[c]) for c in METRIC_COLUMNS}}
                                     for r in rows], DF_COLUMNS)


def plot_metrics(rows: Sequence[Mapping[str, float]], out_dir: Path, name: str) -> List[Path]:
    """``<name>_acc_like_metric_plots.png`` and ``<name>_loss_metric_plots.png`` over epochs."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    x = [int(r["epoch"]) for r in rows]
    panels = {
        f"{name}_acc_like_metric_plots.png": ("fraction", {"Test C-Acc": "test_acc", "Test ASR": "test_asr", "Test RA": "test_ra"}),
        f"{name}_loss_metric_plots.png": ("loss", {"Test Clean Loss": "clean_test_loss_avg_over_batch",
                                                    "Test Backdoor Loss": "bd_test_loss_avg_over_batch",
                                                    "Test RA Loss": "ra_test_loss_avg_over_batch"}),
    }
    written = []
    for fname, (ylabel, series) in panels.items():
        fig = plt.figure(figsize=(12.8, 9.6))
        ax = fig.add_subplot(111)
        for i, (label, key) in enumerate(series.items()):
            ax.plot(x, [float(r[key]) for r in rows], marker=i % 11, linewidth=2, label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.set_title("Results")
        ax.grid()
        ax.legend()
        target = out_dir / fname
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)
        written.append(target)
    return written


def write_defense_result(path: Path, model_name: str, num_classes: int, state_dict: Dict[str, torch.Tensor]) -> None:
    """``defense_result.pt`` as BackdoorBench's save_defense_result writes it."""
    payload = {"model_name": model_name, "num_classes": int(num_classes),
               "model": {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}}
    atomic_save(path, lambda p: torch.save(payload, p))


def write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_attack_summary(path: Path) -> Dict[str, Dict[str, object]] | None:
    """The attack's own ``attack_df_summary.csv`` as {row: {column: value}}, or None."""
    if not path.is_file():
        return None
    try:
        df = pd.read_csv(path, index_col=0)
    except Exception:  # a malformed report must not stop the defense
        return None
    return {str(row): {str(c): _plain(v) for c, v in vals.items()} for row, vals in df.to_dict(orient="index").items()}


def _plain(v):
    if hasattr(v, "item"):
        v = v.item()
    return None if isinstance(v, float) and math.isnan(v) else v
