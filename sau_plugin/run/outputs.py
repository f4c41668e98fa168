"""The defense's output folder: where each file goes, what may be overwritten, and the writers.

``<record_dir>/<result_file>/defense/<defense_name>/`` holds ``defense_result.pt``,
``<name>_df.csv`` (one row per epoch 0, 1, ... as BackdoorBench's sau.py writes it),
``<name>_df_summary.csv``, the two plots, ``sau_result.json`` (with the no-defense figures),
``log/<timestamp>.log``, ``log/index.txt`` and ``checkpoint/last.pt``. ``defense_result.pt`` is
written last, so a failed run leaves none.
"""

import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Sequence

import numpy as np
import torch

from .. import __version__
from ..backdoorbench.metric_csv import summary_frame, write_csv
from ..backdoorbench.results import (FIGURE_COLUMNS, LOSS_COLUMNS, defense_frame, plot_metrics, read_attack_summary,
                                     write_defense_result, write_json)
from ..config import SAUConfig
from ..errors import ConfigError, OutputError
from ..fileio import atomic_write_text



def figures(row: Mapping[str, float]) -> Dict[str, float]:
    """ACC, ASR and R-ACC of a history row (fractions)."""
    return {k: float(row[k]) for k in FIGURE_COLUMNS}


@dataclass(frozen=True)
class OutputDir:
    record_dir: Path
    attack_dir: Path  # <record_dir>/<result_file>
    out: Path  # <attack_dir>/defense/<defense_name>
    log: Path
    checkpoint_dir: Path
    name: str  # file prefix

    @classmethod
    def of(cls, cfg: SAUConfig) -> "OutputDir":
        if not cfg.result_file:
            raise ConfigError("no attack given: pass --result_file <folder under --record_dir>")
        record_dir = Path(cfg.record_dir)
        attack_dir = record_dir / cfg.result_file
        out = attack_dir / "defense" / cfg.defense_name
        return cls(record_dir, attack_dir, out, Path(cfg.log) if cfg.log else out / "log",
                   Path(cfg.checkpoint_save) if cfg.checkpoint_save else out / "checkpoint", cfg.defense_name)

    # ---- the files ----------------------------------------------------------------------------------
    @property
    def checkpoint(self) -> Path:
        return self.checkpoint_dir / "last.pt"

    @property
    def df_csv(self) -> Path:
        return self.out / f"{self.name}_df.csv"

    @property
    def summary_csv(self) -> Path:
        return self.out / f"{self.name}_df_summary.csv"

    @property
    def plots(self) -> List[Path]:
        return [self.out / f"{self.name}_acc_like_metric_plots.png", self.out / f"{self.name}_loss_metric_plots.png"]

    @property
    def result_json(self) -> Path:
        return self.out / "sau_result.json"

    @property
    def defense_result(self) -> Path:
        return self.out / "defense_result.pt"

    @property
    def index_file(self) -> Path:
        return self.log / "index.txt"

    def result_files(self) -> List[Path]:
        """What a run produces; ``--overwrite`` deletes them first, so none survives a failed re-run."""
        return [self.defense_result, self.df_csv, self.summary_csv, *self.plots, self.result_json, self.checkpoint]

    @property
    def risk_files(self) -> List[Path]:
        """What ``--risk_every`` adds: the risk csv and its Figure 4 plot."""
        return [self.out / f"{self.name}_risk_df.csv", self.out / f"{self.name}_risk_plots.png"]

    # ---- policy ----------------------------------------------------------------------------------------
    def check(self, cfg: SAUConfig) -> None:
        """Refuse to clobber an earlier result; fail early when the folder cannot be made."""
        if cfg.resume and cfg.overwrite:
            raise ConfigError("--resume and --overwrite exclude each other: continue the earlier run or replace it")
        if self.out.exists() and any(self.out.iterdir()) and not (cfg.resume or cfg.overwrite):
            raise OutputError(f"defense output {str(self.out)!r} exists already; pass --resume to continue that run, "
                              f"--overwrite to replace it, or another --defense_name")
        existing = self.out
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            raise OutputError(f"cannot create the defense output {str(self.out)!r}: {str(existing)!r} is not a "
                              f"writable folder; fix permissions or choose another --record_dir/--defense_name")

    def prepare(self, overwrite: bool) -> None:
        try:
            for d in (self.out, self.log, self.checkpoint_dir):
                d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create {str(self.out)!r} ({exc.strerror}); choose a writable output "
                              f"folder") from None
        if overwrite:
            for f in [*self.result_files(), *self.risk_files]:
                if f.exists():
                    f.unlink()

    # ---- writers -----------------------------------------------------------------------------------------
    def write_index(self, indices: np.ndarray) -> Path:
        atomic_write_text(self.index_file, "".join(f"{int(i)}\n" for i in indices))  # np.savetxt(fmt='%d')
        return self.index_file

    def write_epoch(self, history: Sequence[Mapping[str, float]]) -> None:
        """After each epoch: the csv so far and the plots."""
        write_csv(defense_frame(history), self.df_csv)
        plot_metrics(history, self.out, self.name)

    def write_tables(self, history: Sequence[Mapping[str, float]]) -> List[Path]:
        """The final csv, summary and plots; none with no epoch run (BackdoorBench's sau.py writes none either)."""
        if not history:
            return []
        df = defense_frame(history)
        write_csv(df, self.df_csv)
        write_csv(summary_frame(df), self.summary_csv)
        return [self.df_csv, self.summary_csv, *plot_metrics(history, self.out, self.name)]

    def attack_summary(self):
        """The attack's own ``attack_df_summary.csv`` as {row: {column: value}}, or None."""
        return read_attack_summary(self.attack_dir / "attack_df_summary.csv")

    def write_result_json(self, result: dict) -> Path:
        write_json(self.result_json, result)
        return self.result_json

    def write_model(self, model_name: str, num_classes: int, model: torch.nn.Module) -> Path:
        write_defense_result(self.defense_result, model_name, num_classes, model.state_dict())
        return self.defense_result


def no_defense_losses(initial: Mapping[str, float]) -> Dict[str, float]:
    return {k: float(initial[k]) for k in LOSS_COLUMNS}


def versions() -> Dict[str, str]:
    import pandas
    import PIL

    return {"sau_plugin": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "pandas": pandas.__version__, "pillow": PIL.__version__}
