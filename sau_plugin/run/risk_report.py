"""Risk diagnostics of a defense run (``--risk_every K``): the risks of ``sau_plugin.risks`` before
unlearning and every K epochs, written as ``<name>_risk_df.csv`` and ``<name>_risk_plots.png``
(the layout of the paper's Figure 4), and whether Proposition 3's chain held at every epoch."""

import math
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn

from ..backdoorbench.metric_csv import metrics_frame, write_csv
from ..core import PGD, Precision, SharedPGD, TargetedSharedPGD
from ..metrics import batches
from ..risks import RISK_KEYS, measure_risks

RISK_COLUMNS = ["epoch", "test_acc", *RISK_KEYS, "risk_d_s", "chain", "tchain"]


class RiskProbe:
    """Measures the risks of a model against the frozen backdoored one on D_-y^ of the test set.

    The attacks use the run's perturbation set and PGD settings (cfg) and a generator of their
    own, so measuring never changes the defense's numbers.
    """

    def __init__(self, model_ref: nn.Module, cfg, test, bd_test, original_index: np.ndarray, mean, std,
                 precision: Precision, device, target: Optional[int] = None):
        self.model_ref, self.cfg, self.target, self.device = model_ref, cfg, target, device
        self.mean, self.std, self.precision = tuple(mean), tuple(std), precision
        idx = torch.as_tensor(np.asarray(original_index), dtype=torch.long)
        x_bd, y_bd, y_orig = bd_test
        self.x_clean, self.y = test[0][idx], y_orig
        self.x_bd, self.y_bd = x_bd, y_bd
        if not torch.equal(test[1][idx], y_orig):
            raise ValueError("poisoned test set and clean test set disagree on true labels; cannot pair them")

    def _attacks(self, model: nn.Module) -> List:
        c = self.cfg
        kw = dict(bound=c.trigger_norm, norm=c.norm_type, step_size=c.adv_lr, steps=c.adv_steps, init=c.pgd_init,
                  mean=self.mean, std=self.std, precision=self.precision,
                  generator=torch.Generator().manual_seed(c.random_seed))
        attacks = [SharedPGD(model, self.model_ref, beta_1=c.beta_1, beta_2=c.beta_2, **kw), PGD(model, **kw)]
        if self.target is not None:
            attacks.append(TargetedSharedPGD(model, self.model_ref, target=self.target, beta_1=c.beta_1,
                                             beta_2=c.beta_2, **kw))
        return attacks

    def __call__(self, model: nn.Module) -> Dict[str, float]:
        from ..core.perturbation import PixelSpace

        space = PixelSpace(self.mean, self.std)
        data = ((space.normalize_uint8(x), y, space.normalize_uint8(xp), yb) for x, y, xp, yb in
                batches(self.x_clean, self.y, self.x_bd, self.y_bd, batch_size=self.cfg.batch_size,
                        device=self.device))
        out = measure_risks(model, self.model_ref, data, self._attacks(model), self.target)
        return {k: float(v) for k, v in out.items()}


def risk_rows(initial: Mapping[str, float], history: Sequence[Mapping[str, float]]) -> List[Dict[str, float]]:
    """One row per measured point; ``epoch`` = epochs completed (0: before unlearning)."""
    rows = []
    for epochs_done, row in [(0, initial)] + [(int(r["epoch"]) + 1, r) for r in history]:
        if "risk_adv" in row:
            rows.append({"epoch": epochs_done, "test_acc": row["test_acc"],
                         **{k: row.get(k, math.nan) for k in RISK_COLUMNS[2:]}})
    return rows


def chain_summary(rows: Sequence[Mapping[str, float]]) -> Dict[str, object]:
    """Whether R_bd <= R_sub <= R_adv (and R_bd <= R_tsub <= R_sub, when targeted) held at every point."""
    out: Dict[str, object] = {"points": len(rows),
                              "chain_held_every_epoch": all(bool(r["chain"]) for r in rows),
                              "chain_failed_at_epochs": [int(r["epoch"]) for r in rows if not bool(r["chain"])]}
    targeted = [r for r in rows if not math.isnan(float(r.get("tchain", math.nan)))]
    if targeted:
        out["tchain_held_every_epoch"] = all(bool(r["tchain"]) for r in targeted)
        out["tchain_failed_at_epochs"] = [int(r["epoch"]) for r in targeted if not bool(r["tchain"])]
    return out


def write_risk_files(rows: Sequence[Mapping[str, float]], csv: Path, png: Path, title: str = "") -> List[Path]:
    """The risk csv and its plot in the layout of Figure 4 (accuracy, backdoor risk, adversarial
    risk and shared adversarial risk over epochs, with R_sub dashed and R_tsub dotted)."""
    if not rows:
        return []
    write_csv(metrics_frame([dict(r) for r in rows], RISK_COLUMNS), csv)
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    x = [r["epoch"] for r in rows]
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    lines = [("test_acc", "Accuracy", "tab:green", "-"), ("risk_bd", "Backdoor Risk (ASR)", "tab:orange", "-"),
             ("risk_adv", "Adversarial Risk", "tab:purple", "-"),
             ("risk_shared", "Shared Adversarial Risk", "tab:blue", "-"),
             ("risk_sub", "Sub-adversarial Risk R_sub", "tab:gray", "--"),
             ("risk_tsub", "Targeted sub-adv. Risk R_tsub", "tab:red", ":")]
    for key, label, color, style in lines:
        y = [float(r.get(key, math.nan)) for r in rows]
        if not all(math.isnan(v) for v in y):
            ax.plot(x, y, style, color=color, label=label, marker="o", markersize=3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epochs of unlearning")
    ax.set_ylabel("fraction")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, frameon=False)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return [csv, png]
