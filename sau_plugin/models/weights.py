"""The one loader of BackdoorBench state_dicts into this package's models.

A state_dict from BackdoorBench (an attack's ``attack_result.pt``, a defense's
``defense_result.pt``) may carry what its writer left in it: ``module.`` prefixes
(DataParallel), pruning's ``<p>_orig`` / ``<p>_mask`` pairs (FP saves its pruned model),
or other key names for the same tensors (BackdoorBench then renames by position).
:func:`build_model` undoes each, then loads strictly.
"""

from __future__ import annotations

import logging
from typing import Dict, Mapping, Sequence, Union

import torch
import torch.nn as nn

from ..errors import ModelError

log = logging.getLogger(__name__)


def strip_module_prefix(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """DataParallel saves keys as ``module.<key>``; the models know them without it."""
    return {(k[7:] if k.startswith("module.") else k): v for k, v in state_dict.items()}


def fold_pruning(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """``torch.nn.utils.prune``'s ``<p>_orig`` / ``<p>_mask`` pairs folded into ``<p> = orig * mask``."""
    out = {}
    for k, v in state.items():
        if k.endswith("_orig") and k[:-len("_orig")] + "_mask" in state:
            out[k[:-len("_orig")]] = v * state[k[:-len("_orig")] + "_mask"]
        elif k.endswith("_mask") and k[:-len("_mask")] + "_orig" in state:
            continue
        else:
            out[k] = v
    return out


def rename_by_position(state_dict: Mapping[str, torch.Tensor],
                       model_keys: Union[Sequence[str], Mapping[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    """BackdoorBench's fallback: when the key names differ but the counts agree, take the
    i-th tensor for the model's i-th key. Given the model's state_dict (not just its key
    names), only when every shape agrees too; otherwise the dict comes back unchanged, so
    that :func:`load_weights` reports the file's own key names."""
    keys, new_keys = list(state_dict), list(model_keys)
    if set(keys) == set(new_keys) or len(keys) != len(new_keys):
        return dict(state_dict)
    if isinstance(model_keys, Mapping) and any(
            not isinstance(state_dict[old], torch.Tensor) or state_dict[old].shape != model_keys[new].shape
            for old, new in zip(keys, new_keys)):
        return dict(state_dict)
    renamed = {new: state_dict[old] for old, new in zip(keys, new_keys)}
    changed = [(old, new) for old, new in zip(keys, new_keys) if old != new]
    log.info("renaming %d state_dict keys by position (as BackdoorBench does), e.g. %s -> %s", len(changed), *changed[0])
    return renamed


def infer_model_kwargs(name: str, state_dict: Mapping[str, torch.Tensor]) -> dict:
    """Architecture arguments recoverable from a state_dict (input channels, width).

    Lets a narrow or 1-channel PreAct-ResNet18 (the offline default's) be rebuilt from
    its weights alone; for BackdoorBench's own models this returns the defaults.
    """
    first = {"preactresnet18": "conv1.weight", "resnet18": "conv1.weight",
             "vgg19": "features.0.weight", "vgg19_bn": "features.0.weight"}.get(name)
    w = state_dict.get(first) if first else None
    if not isinstance(w, torch.Tensor) or w.dim() != 4:
        return {}
    kwargs = {"in_channels": int(w.shape[1])}
    if name == "preactresnet18":
        kwargs["width"] = int(w.shape[0])
    return kwargs


def load_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, what: str = "state_dict") -> nn.Module:
    """Strict ``load_state_dict`` whose error names the missing / unexpected / mis-shaped keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [
        f"{k}: expected {tuple(own[k].shape)}, found {tuple(state_dict[k].shape)}"
        for k in own
        if k in state_dict and isinstance(state_dict[k], torch.Tensor) and state_dict[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_short(unexpected)}")
        if shapes:
            parts.append(f"shape mismatch {_short(shapes)}")
        raise ModelError(
            f"{what} does not fit model {type(model).__name__}: {'; '.join(parts)}; "
            f"check that the model name and num_classes match the weights"
        )
    model.load_state_dict(state_dict, strict=True)
    return model


def _short(items: list, n: int = 5) -> str:
    shown = ", ".join(items[:n])
    return f"[{shown}{', ... (%d more)' % (len(items) - n) if len(items) > n else ''}]"


def build_model(name: str, num_classes: int, state_dict: Mapping[str, torch.Tensor], *, what: str) -> nn.Module:
    """``name`` with ``state_dict`` loaded strictly: prefixes stripped, pruning folded,
    architecture arguments inferred, keys renamed by position where BackdoorBench would."""
    from . import create_model  # the registry imports this module

    state = fold_pruning(strip_module_prefix(state_dict))
    model = create_model(name, int(num_classes), **infer_model_kwargs(name, state))
    return load_weights(model, rename_by_position(state, model.state_dict()), what=what)
