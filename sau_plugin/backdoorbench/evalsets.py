"""Test sets and the attacked model of a record folder, for re-evaluating saved models
(``sau-plugin report --reevaluate``): the same reading path as the defense itself."""

from __future__ import annotations

from pathlib import Path
from dataclasses import dataclass
from typing import Dict, Sequence, Tuple, Union

import torch

from ..models import build_model
from .loaders import eval_tensors, load_data
from .record import read_attack_result
from .transforms import normalization


@dataclass(frozen=True)
class EvalSets:
    """The attack's test sets, pixels in [0, 1] (the test transform without normalisation)."""

    x_clean: torch.Tensor  # float (N, C, H, W) in [0, 1]
    y_clean: torch.Tensor
    x_bd: torch.Tensor  # float (M, C, H, W) in [0, 1]
    y_bd: torch.Tensor
    y_orig: torch.Tensor
    mean: Sequence[float]
    std: Sequence[float]


def load_eval_sets(attack_dir: Union[Path, str], *, loader: str = "standalone", trust_pickle: bool = False) -> EvalSets:
    attack_dir = Path(attack_dir)
    record = read_attack_result(attack_dir, trust_pickle=trust_pickle)
    data = load_data(record, attack_dir, attack_dir.parent, loader)
    (x, y), (xb, yb, yo) = eval_tensors(record, data)
    mean, std = normalization(record.clean_data)
    return EvalSets(x.float() / 255, y, xb.float() / 255, yb, yo, mean, std)


def load_attack_model(attack_dir: Union[Path, str], *, trust_pickle: bool = False) -> Tuple[str, int, Dict[str, torch.Tensor]]:
    """(model_name, num_classes, state_dict) of the backdoored model, keys as the model expects."""
    record = read_attack_result(Path(attack_dir), trust_pickle=trust_pickle)
    model = build_model(record.model_name, record.num_classes, record.state_dict,
                        what=f"the weights in {str(record.path)!r}")
    return record.model_name, record.num_classes, model.state_dict()
