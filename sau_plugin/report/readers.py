"""One metrics file in, :class:`Figures` out (pure: a file in, Figures or an error out).

Every figure is a fraction in columns ``test_acc`` (ACC), ``test_asr`` (ASR) and
``test_ra`` (R-ACC). Two CSV shapes occur:

* a *summary* (``Metric_Aggregator.summary()``, utils/trainer_cls.py:74-89 with
  ``last_and_valid_max`` at :36-48): rows ``last`` (last non-empty value of each
  column), ``valid_max`` (maximum over epochs: not a final figure, and for ASR the
  worst one) and ``exist_nan_value``;
* a *per-step table* (``Metric_Aggregator.to_dataframe()``): rows 0, 1, ...; the
  final figures are in the last row. Several defenses write this shape under a name
  ending in ``_df_summary.csv``.

NaN metrics are stored as the string ``nan_value`` (trainer_cls.py:56-63); they are
read as NaN and shown as NaN, never replaced by another row.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Mapping, Tuple

import pandas as pd

from ..errors import RecordError

METRIC_COLUMNS = {"acc": "test_acc", "asr": "test_asr", "ra": "test_ra"}
_NAN_STRINGS = {"", "nan", "nan_value", "none", "null"}


@dataclass(frozen=True)
class Figures:
    """Final ACC / ASR / R-ACC of one run, as fractions (NaN where the file says NaN)."""

    acc: float
    asr: float
    ra: float
    source: str  # where they were read, e.g. "defense/fp/finetune_df_summary.csv, row last"



def _to_float(value) -> float:
    if value is None:
        return math.nan
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    if text.lower() in _NAN_STRINGS:
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise RecordError(f"expected a number, found {text!r}") from None


def read_final_row(path: Path) -> Tuple[Dict[str, object], str, bool]:
    """The final row of a BackdoorBench metrics CSV (either shape; see the module docstring).

    Returns ``(row, row_name, nan_seen)``: the row as a dict of raw strings, ``"last"``
    or the index of the last data row, and whether the file reports NaN values anywhere
    (an ``exist_nan_value`` row with a True, or a ``nan_value`` cell).
    """
    try:
        df = pd.read_csv(path, index_col=0, dtype=str, keep_default_na=False)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise RecordError(f"{path} is not a readable CSV ({exc})") from None
    if df.empty:
        raise RecordError(f"{path} holds no rows")
    index = [str(i) for i in df.index]
    nan_seen = bool((df.apply(lambda col: col.str.strip().str.lower() == "nan_value")).to_numpy().any())
    if "exist_nan_value" in index:
        flags = df.loc[df.index[index.index("exist_nan_value")]]
        nan_seen = nan_seen or any(str(v).strip().lower() == "true" for v in flags)
    if "last" in index:
        pos, name = index.index("last"), "last"
    else:
        data_rows = [i for i, label in enumerate(index) if label not in ("valid_max", "exist_nan_value")]
        if not data_rows:
            raise RecordError(f"{path} has no data row")
        pos = data_rows[-1]
        name = index[pos]
    return df.iloc[pos].to_dict(), name, nan_seen


def figures_from_row(row: Mapping[str, object], source: str) -> Figures:
    """ACC / ASR / R-ACC from a row with BackdoorBench's column names (fractions)."""
    absent = [col for col in METRIC_COLUMNS.values() if col not in row]
    if absent:
        raise RecordError(
            f"{source}: no column {', '.join(absent)} (columns: {', '.join(map(str, row)) or 'none'})"
        )
    try:
        values = {key: _to_float(row[col]) for key, col in METRIC_COLUMNS.items()}
    except RecordError as exc:
        raise RecordError(f"{source}: {exc}") from None
    return Figures(source=source, **values)


def read_csv_figures(path: Path, label: str) -> Tuple[Figures, Tuple[str, ...]]:
    row, row_name, nan_seen = read_final_row(path)
    figures = figures_from_row(row, f"{label}, row {row_name}")
    notes = (f"{label}: the run reports NaN values (exist_nan_value / nan_value)",) if nan_seen else ()
    return figures, notes


def read_json_figures(path: Path, label: str) -> Tuple[Figures, Tuple[str, ...]]:
    """The plugin's ``sau_result.json``: key ``final`` with test_acc / test_asr / test_ra."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RecordError(f"{path} is not readable JSON ({exc})") from None
    final = data.get("final") if isinstance(data, dict) else None
    if not isinstance(final, dict):
        raise RecordError(f"{label}: no 'final' dict")
    return figures_from_row(final, f"{label}, key final"), ()


__all__ = ["METRIC_COLUMNS", "Figures", "read_final_row", "figures_from_row", "read_csv_figures", "read_json_figures"]
