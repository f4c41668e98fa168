"""``--reevaluate``: measure every saved model with the plugin's own evaluator.

BackdoorBench's defenses each evaluate in their own way (and two of them save a
model other than the one their figures describe; see ``collect``), so for a fair
table every ``defense_result.pt`` is loaded and evaluated here on the attack's test
sets with :mod:`sau_plugin.metrics` (ACC on the clean test set, ASR and R-ACC from one
pass over the poisoned test set).

The test sets and the attacked model come from :mod:`sau_plugin.backdoorbench.evalsets`
(the defense's own reading path); :class:`Reevaluator` takes other functions for tests.

``defense_result.pt`` is BackdoorBench's ``{'model_name', 'num_classes', 'model'}``;
it holds only tensors and plain values and is read with torch's own safe globals only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch

from ..backdoorbench import evalsets
from ..backdoorbench.evalsets import EvalSets
from ..core.perturbation import PixelSpace
from ..errors import RecordError, SAUError
from ..metrics import batches, evaluate_backdoor, evaluate_clean
from ..models import build_model
from ..safeload import load_weights_only
from .collect import Figures, Run, defense_source, missing


def load_defense_model(path: Path) -> torch.nn.Module:
    obj = load_weights_only(path, what="defense_result.pt", fix="re-run that defense")
    if not isinstance(obj, dict) or not {"model_name", "num_classes", "model"} <= set(obj):
        raise RecordError(f"{path}: expected a dict with model_name, num_classes and model")
    return build_model(obj["model_name"], obj["num_classes"], obj["model"], what=str(path))


def measure(model: torch.nn.Module, sets: EvalSets, source: str, device: str = "cpu", batch_size: int = 256) -> Figures:
    """ACC, ASR and R-ACC of ``model`` on ``sets`` (normalised here with the sets' mean / std)."""
    model = model.to(device).eval()
    space = PixelSpace(sets.mean, sets.std).to(device)

    def normalised(data):
        for x, *rest in data:
            yield (space.normalize(x.float()), *rest)

    clean = evaluate_clean(model, normalised(batches(sets.x_clean, sets.y_clean, batch_size=batch_size, device=device)))
    bd = evaluate_backdoor(model, normalised(batches(sets.x_bd, sets.y_bd, sets.y_orig, batch_size=batch_size,
                                                     device=device)))
    return Figures(clean["test_acc"], bd["test_asr"], bd["test_ra"], source)


_FROM_EVALSETS = object()


class Reevaluator:
    """Callable for :func:`collect.collect`: re-measures one attack folder's models."""

    def __init__(self, device: str = "cpu", batch_size: int = 256, *, load_sets: Optional[Callable] = None,
                 load_attack_model: Optional[Callable] = _FROM_EVALSETS):
        """``load_sets(attack_dir) -> EvalSets`` and ``load_attack_model(attack_dir) -> (name,
        num_classes, state_dict)`` default to :mod:`~sau_plugin.backdoorbench.evalsets`' own,
        looked up when called; ``load_attack_model=None`` keeps the No Defense figures of
        ``attack_df_summary.csv``."""
        self.device = device
        self.batch_size = batch_size
        self._load_sets = load_sets
        self._load_attack_model = load_attack_model

    @property
    def load_sets(self) -> Callable:
        return self._load_sets if self._load_sets is not None else evalsets.load_eval_sets

    @property
    def load_attack_model(self) -> Optional[Callable]:
        if self._load_attack_model is _FROM_EVALSETS:
            return evalsets.load_attack_model
        return self._load_attack_model

    def __call__(self, attack_dir: Path, defenses: Sequence[str]) -> Tuple[Optional[Run], Dict[str, Run]]:
        if not any((attack_dir / "defense" / d / "defense_result.pt").is_file() for d in defenses) \
                and self.load_attack_model is None:
            return None, {d: self._defense(attack_dir, d, None) for d in defenses}  # nothing to measure
        try:
            sets = self.load_sets(attack_dir)
        except SAUError as exc:
            why = f"{attack_dir.name}: --reevaluate could not read the test sets: {exc}"
            return missing(why), {d: missing(why) for d in defenses}
        no_def = self._no_defense(attack_dir, sets)
        return no_def, {d: self._defense(attack_dir, d, sets) for d in defenses}

    def _no_defense(self, attack_dir: Path, sets: EvalSets) -> Optional[Run]:
        loader = self.load_attack_model
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


__all__ = ["Reevaluator", "load_defense_model", "measure"]
