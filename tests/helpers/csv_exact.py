"""Reading result CSVs back exactly: the round-trip float parser (pandas < 3 otherwise differs by
an ulp between versions; pandas 3 parses exactly by default and deprecates the option)."""

from __future__ import annotations

import pandas as pd

_EXACT = {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}


def read_csv_exact(path, **kwargs) -> pd.DataFrame:
    return pd.read_csv(path, **_EXACT, **kwargs)
