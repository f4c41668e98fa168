"""``<prefix>_df.csv`` and ``<prefix>_df_summary.csv`` exactly as BackdoorBench's
``Metric_Aggregator`` writes them (utils/trainer_cls.py, ``last_and_valid_max`` and
``Metric_Aggregator.to_dataframe`` / ``summary``).

* ``_df.csv``: an unnamed index column, one row per step, an object frame holding the
  values as given, a NaN metric written as the string ``nan_value``;
* ``_df_summary.csv``: rows ``last`` (the last non-NA cell of each column: a
  ``nan_value`` cell counts, so a run ending in NaN says so), ``valid_max`` (the largest
  numeric cell; ``nan_value`` ignored) and ``exist_nan_value`` (any ``nan_value`` cell).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence, Tuple

import pandas as pd

from ..fileio import atomic_write_text

NAN_CELL = "nan_value"
SUMMARY_ROWS = ["last", "valid_max", "exist_nan_value"]


def _cell(v: Any) -> Any:
    return NAN_CELL if isinstance(v, float) and math.isnan(v) else v


def metrics_frame(rows: Sequence[Mapping[str, Any]], columns: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """One row per entry of ``rows``; ``columns`` (default: every key, in first-seen order)
    in that order, other keys dropped."""
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
    records = [{c: _cell(r[c]) for c in columns} for r in rows]
    return pd.DataFrame(records, columns=list(columns), dtype=object)


def _last_and_valid_max(col: pd.Series) -> pd.Series:
    valid = col[~col.isna()]
    return pd.Series(index=SUMMARY_ROWS, data=[
        valid.iloc[-1] if len(valid) else None,
        pd.to_numeric(col, errors="coerce").max(),
        any(v == NAN_CELL for v in col),
    ])


def summary_frame(df: pd.DataFrame) -> pd.DataFrame:
    return df.apply(_last_and_valid_max)


def write_csv(df: pd.DataFrame, path: Path) -> None:
    atomic_write_text(path, df.to_csv())


def write_metric_csvs(folder: Path, prefix: str, rows: Sequence[Mapping[str, Any]],
                      columns: Optional[Sequence[str]] = None) -> Tuple[Path, Path]:
    """Both files in ``folder``; returns their paths (per-step table, summary)."""
    df = metrics_frame(rows, columns)
    paths: List[Path] = [Path(folder) / f"{prefix}_df.csv", Path(folder) / f"{prefix}_df_summary.csv"]
    write_csv(df, paths[0])
    write_csv(summary_frame(df), paths[1])
    return paths[0], paths[1]


__all__ = ["NAN_CELL", "SUMMARY_ROWS", "metrics_frame", "summary_frame", "write_csv", "write_metric_csvs"]
