"""Synthetic BackdoorBench record trees for the report tests.

The files are written in the two shapes BackdoorBench produces (see
``sau_plugin.report.collect``): a *summary* (index column, rows ``last``,
``valid_max``, ``exist_nan_value``) and a *per-step table* (rows 0, 1, ...). NaN
metrics are written as the string ``nan_value``, as BackdoorBench does.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import pandas as pd

LOSS_COLUMNS = ("clean_test_loss_avg_over_batch", "bd_test_loss_avg_over_batch")


def epoch_rows(final: Sequence[float], epochs: int = 3, extra: Optional[Dict[str, object]] = None) -> List[dict]:
    """``epochs`` rows whose last one has (test_acc, test_asr, test_ra) = ``final``; earlier ones differ.

    Earlier epochs get a *higher* ASR and ACC than the final one, so a reader that
    picked ``valid_max`` instead of ``last`` would be caught.
    """
    rows = []
    for e in range(epochs):
        bump = 0.0 if e == epochs - 1 else 0.05 * (epochs - 1 - e)
        acc, asr, ra = final
        rows.append({"epoch": e, LOSS_COLUMNS[0]: 0.5, LOSS_COLUMNS[1]: 2.0,
                     "test_acc": _nan_or(acc, min(1.0, acc + bump) if not _isnan(acc) else acc),
                     "test_asr": _nan_or(asr, min(1.0, asr + bump) if not _isnan(asr) else asr),
                     "test_ra": _nan_or(ra, ra), **(extra or {})})
    return rows


def _isnan(v) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _nan_or(original, value):
    return "nan_value" if _isnan(original) else value


def write_summary(path: Path, rows: List[dict]) -> Path:
    """BackdoorBench's summary shape: per column, last non-empty value, numeric max, any 'nan_value'."""
    df = pd.DataFrame(rows, dtype=object)
    summary = {}
    for col in df.columns:
        series = df[col]
        present = series[~series.isna()]
        summary[col] = [present.iloc[-1], pd.to_numeric(series, errors="coerce").max(),
                        any(v == "nan_value" for v in series)]
    out = pd.DataFrame(summary, index=["last", "valid_max", "exist_nan_value"])
    path.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(path)
    return path


def write_steps(path: Path, rows: List[dict]) -> Path:
    """BackdoorBench's per-step shape (``Metric_Aggregator.to_dataframe().to_csv``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, dtype=object).to_csv(path)
    return path


def metric_row(acc, asr, ra, **extra) -> dict:
    return {LOSS_COLUMNS[0]: 0.4, LOSS_COLUMNS[1]: 3.0, **extra,
            "test_acc": "nan_value" if _isnan(acc) else acc,
            "test_asr": "nan_value" if _isnan(asr) else asr,
            "test_ra": "nan_value" if _isnan(ra) else ra}


class RecordTree:
    """Builds ``record/<attack>/...`` the way each BackdoorBench script leaves it."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def attack(self, name: str, acc: float, asr: float, ra: float) -> Path:
        d = self.root / name
        write_summary(d / "attack_df_summary.csv", epoch_rows((acc, asr, ra)))
        (d / "attack_result.pt").write_bytes(b"not read by the report")
        return d

    def _folder(self, attack: str, defense: str, finished: bool = True) -> Path:
        d = self.root / attack / "defense" / defense
        d.mkdir(parents=True, exist_ok=True)
        if finished:
            (d / "defense_result.pt").write_bytes(b"placeholder")
        return d

    def anp(self, attack, acc, asr, ra):
        d = self._folder(attack, "anp")
        write_steps(d / "threshold_df.csv", [metric_row(0.1, 0.0, 0.1, threshold=t) for t in (0.0, 0.05)])
        write_steps(d / "anp_df_summary.csv", [metric_row(acc, asr, ra)])

    def fp(self, attack, acc, asr, ra, finetune: bool = True, finished: bool = True):
        d = self._folder(attack, "fp", finished)
        prune = [{"num_pruned": n, "all_filter_num": 512, "test_acc": 0.2, "test_asr": 0.9, "test_ra": 0.05}
                 for n in (0, 6)]
        if not finetune:
            prune[-1].update(test_acc=acc, test_asr=asr, test_ra=ra)
        write_steps(d / "prune_log.csv", prune)
        write_summary(d / "prune_log_summary.csv", prune)
        if finetune:
            write_summary(d / "finetune_df_summary.csv", epoch_rows((acc, asr, ra)))

    def nad(self, attack, acc, asr, ra):
        d = self._folder(attack, "nad")
        write_summary(d / "nad_te_df_summary.csv", epoch_rows((0.99, 0.99, 0.0)))
        write_summary(d / "nad_df_summary.csv", epoch_rows((acc, asr, ra)))

    def nc(self, attack, acc, asr, ra, detected: bool = True):
        d = self._folder(attack, "nc")
        if detected:
            write_summary(d / "nc_df_summary.csv", epoch_rows((acc, asr, ra)))
        else:
            write_steps(d / "nc_df_summary.csv", [metric_row(acc, asr, ra)])

    def ep(self, attack, acc, asr, ra):
        d = self._folder(attack, "ep")
        write_steps(d / "u_step_df.csv", [metric_row(0.1, 0.0, 0.1, u=u) for u in (0.0, 0.5)])
        write_steps(d / "ep_df_summary.csv", [metric_row(acc, asr, ra, u=3)])

    def ibau(self, attack, acc, asr, ra):
        d = self._folder(attack, "i-bau")
        write_summary(d / "i-bau_df_summary.csv", epoch_rows((acc, asr, ra)))

    def sau(self, attack, acc, asr, ra, name: str = "sau", csv_name: Optional[str] = None, json_only: bool = False):
        d = self._folder(attack, name)
        if json_only:
            import json

            (d / "sau_result.json").write_text(json.dumps({
                "no_defense": {"test_acc": 0.9, "test_asr": 0.9, "test_ra": 0.1},
                "final": {"test_acc": acc, "test_asr": asr, "test_ra": ra}, "der": 0.0}))
        else:
            write_summary(d / (csv_name or f"{name}_df_summary.csv"), epoch_rows((acc, asr, ra)))

    def defense(self, kind: str, attack: str, acc, asr, ra, **kw):
        getattr(self, {"i-bau": "ibau"}.get(kind, kind))(attack, acc, asr, ra, **kw)
