"""``--reevaluate``: measure every saved model with the plugin's own evaluator.

BackdoorBench's defenses each evaluate in their own way (and two of them save a
model other than the one their figures describe; see ``collect``), so for a fair
table every ``defense_result.pt`` is loaded and evaluated here on the attack's test
sets with :mod:`sau_plugin.metrics` (ACC on the clean test set, ASR and R-ACC from one
pass over the poisoned test set).

The test sets come from ``sau_plugin.backdoorbench.evalsets``, imported lazily, which
must provide::

    load_eval_sets(attack_dir: Path) -> EvalSets-like
        x_clean  float tensor N x C x H x W, pixel values in [0, 1] (test transform
                 without normalisation), y_clean  long tensor N
        x_bd, y_bd, y_orig   the poisoned test set (M x C x H x W in [0, 1]),
                 its backdoor labels and its original labels
        mean, std  the dataset's normalisation, one value per channel

as a tuple in that order or an object with those attributes; and optionally::

    load_attack_model(attack_dir: Path) -> (model_name, num_classes, state_dict)

for the backdoored model itself. Without it the No Defense figures stay those of
``attack_df_summary.csv`` and a note says so.

``defense_result.pt`` is BackdoorBench's ``{'model_name', 'num_classes', 'model'}``;
it holds only tensors and plain values and is read with torch's own safe globals only.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import torch

from ..safeload import load_weights_only
from ..errors import RecordError, SAUError
from ..metrics import batches, evaluate_backdoor, evaluate_clean
from ..models import build_model
from .collect import Figures, Run, defense_source, missing

RECORD_MODULE = "sau_plugin.backdoorbench.evalsets"


@dataclass(frozen=True)
class EvalSets:
    x_clean: torch.Tensor
    y_clean: torch.Tensor
    x_bd: torch.Tensor
    y_bd: torch.Tensor
    y_orig: torch.Tensor
    mean: Sequence[float]
    std: Sequence[float]

    @classmethod
    def coerce(cls, obj) -> "EvalSets":
        if isinstance(obj, cls):
            return obj
        names = ("x_clean", "y_clean", "x_bd", "y_bd", "y_orig", "mean", "std")
        if isinstance(obj, (tuple, list)) and len(obj) == len(names):
            return cls(*obj)
        if all(hasattr(obj, n) for n in names):
            return cls(*(getattr(obj, n) for n in names))
        raise RecordError(f"{RECORD_MODULE}.load_eval_sets returned {type(obj).__name__}; expected "
                          f"(x_clean, y_clean, x_bd, y_bd, y_orig, mean, std)")


def record_module():
    """``sau_plugin.backdoorbench.evalsets``, or a RecordError that says it is not in this build."""
    try:
        module = importlib.import_module(RECORD_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name and not exc.name.startswith("sau_plugin"):
            raise
        raise RecordError(f"--reevaluate needs {RECORD_MODULE} (the attack_result.pt reader), which is not part of "
                          f"this build; run the report without --reevaluate to use the figures the runs wrote") from None
    if not hasattr(module, "load_eval_sets"):
        raise RecordError(f"{RECORD_MODULE} has no load_eval_sets(attack_dir); --reevaluate cannot read test sets")
    return module


def load_defense_model(path: Path) -> torch.nn.Module:
    obj = load_weights_only(path, what="defense_result.pt", fix="re-run that defense")
    if not isinstance(obj, dict) or not {"model_name", "num_classes", "model"} <= set(obj):
        raise RecordError(f"{path}: expected a dict with model_name, num_classes and model")
    return build_model(obj["model_name"], obj["num_classes"], obj["model"], what=str(path))


def measure(model: torch.nn.Module, sets: EvalSets, source: str, device: str = "cpu", batch_size: int = 256) -> Figures:
    """ACC, ASR and R-ACC of ``model`` on ``sets`` (normalised here with the sets' mean / std)."""
    model = model.to(device).eval()
    channels = sets.x_clean.shape[1]
    mean = torch.as_tensor(sets.mean, dtype=torch.float32).reshape(1, -1, 1, 1).expand(1, channels, 1, 1).to(device)
    std = torch.as_tensor(sets.std, dtype=torch.float32).reshape(1, -1, 1, 1).expand(1, channels, 1, 1).to(device)

    def normalised(data):
        for x, *rest in data:
            yield ((x.float() - mean) / std, *rest)

    clean = evaluate_clean(model, normalised(batches(sets.x_clean, sets.y_clean, batch_size=batch_size, device=device)))
    bd = evaluate_backdoor(model, normalised(batches(sets.x_bd, sets.y_bd, sets.y_orig, batch_size=batch_size,
                                                     device=device)))
    return Figures(clean["test_acc"], bd["test_asr"], bd["test_ra"], source)


class Reevaluator:
    """Callable for :func:`collect.collect`: re-measures one attack folder's models."""

    def __init__(self, device: str = "cpu", batch_size: int = 256, module=None):
        self.device = device
        self.batch_size = batch_size
        self.module = module if module is not None else record_module()

    def __call__(self, attack_dir: Path, defenses: Sequence[str]) -> Tuple[Optional[Run], Dict[str, Run]]:
        if not any((attack_dir / "defense" / d / "defense_result.pt").is_file() for d in defenses) \
                and not hasattr(self.module, "load_attack_model"):
            return None, {d: self._defense(attack_dir, d, None) for d in defenses}  # nothing to measure
        try:
            sets = EvalSets.coerce(self.module.load_eval_sets(attack_dir))
        except SAUError as exc:
            why = f"{attack_dir.name}: --reevaluate could not read the test sets: {exc}"
            return missing(why), {d: missing(why) for d in defenses}
        no_def = self._no_defense(attack_dir, sets)
        return no_def, {d: self._defense(attack_dir, d, sets) for d in defenses}

    def _no_defense(self, attack_dir: Path, sets: EvalSets) -> Optional[Run]:
        loader = getattr(self.module, "load_attack_model", None)
        if loader is None:
            return None  # keep attack_df_summary.csv; collect() notes the source
        try:
            name, num_classes, state = loader(attack_dir)
            model = build_model(name, num_classes, state, what=f"{attack_dir.name}/attack_result.pt")
            return Run(self._measure(model, sets, f"{attack_dir.name}/attack_result.pt, re-evaluated"))
        except SAUError as exc:
            return missing(f"{attack_dir.name}: --reevaluate could not measure the attacked model: {exc}")

    def _defense(self, attack_dir: Path, name: str, sets: Optional[EvalSets]) -> Run:
        rel = f"{attack_dir.name}/defense/{name}"
        path = attack_dir / "defense" / name / "defense_result.pt"
        if not path.parent.is_dir():
            return missing(f"{rel}: not run (no folder)")
        if not path.is_file():
            return missing(f"{rel}: no defense_result.pt to re-evaluate")
        try:
            figures = self._measure(load_defense_model(path), sets, f"{rel}/defense_result.pt, re-evaluated")
        except SAUError as exc:
            return missing(f"{rel}: {exc}")
        caveat = defense_source(name).caveat
        return Run(figures, (f"{rel}: re-evaluated; caveat: {caveat}",) if caveat else ())

    def _measure(self, model: torch.nn.Module, sets: EvalSets, source: str) -> Figures:
        try:
            return measure(model, sets, source, self.device, self.batch_size)
        except RuntimeError as exc:  # e.g. the model does not fit the images (channels, size)
            raise RecordError(f"{source.split(',')[0]} does not run on the test images: {str(exc)[:200]}") from None


__all__ = ["EvalSets", "Reevaluator", "record_module", "load_defense_model",
           "measure", "RECORD_MODULE"]
