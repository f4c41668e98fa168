"""``checkpoint/last.pt``: everything a killed defense needs to continue bit for bit.

Written atomically after every epoch, and after the batch a preempted run stopped at (its
epoch's progress included): the Unlearner's state (model, optimizer, scheduler,
shuffling/PGD generator, epoch, history), the no-defense row, the clean indices, the
global RNG states, and a fingerprint of the settings that change the numbers. The
frozen model's cached predictions are not stored: they are recomputed, identically,
from the unchanged backdoored weights.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from ..config import SAUConfig
from ..core import Unlearner
from ..errors import ConfigError, RecordError
from ..fileio import atomic_save
from ..safeload import safe_torch_load

FORMAT = "sau_plugin.checkpoint/1"  # between epochs
FORMAT_MID_EPOCH = "sau_plugin.checkpoint/2"  # with the progress of a stopped epoch, which /1 readers would drop
FORMATS = (FORMAT, FORMAT_MID_EPOCH)


def save(path: Path, unlearner: Unlearner, initial: dict, indices: np.ndarray, cfg: SAUConfig) -> None:
    saved = unlearner.state_dict()
    state = {
        "format": FORMAT if saved.get("progress") is None else FORMAT_MID_EPOCH,
        "unlearner": saved,
        "initial": dict(initial),
        "indices": torch.from_numpy(np.asarray(indices, dtype=np.int64)),
        "fingerprint": cfg.fingerprint(),
        "rng": {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
    }
    atomic_save(path, lambda p: torch.save(state, p))


def read(path: Path, cfg: SAUConfig, indices: np.ndarray) -> dict:
    """The checkpoint to resume from, checked against the current settings (before anything is written)."""
    state = safe_torch_load(path, what="checkpoint",
                            fix="it cannot be resumed from; pass --overwrite instead of --resume to start over")
    if not isinstance(state, dict) or state.get("format") not in FORMATS:
        raise RecordError(f"checkpoint {str(path)!r} is not a sau_plugin checkpoint; pass --overwrite to start over")
    # Only the settings that change the numbers count (SAUConfig.fingerprint): a moved record folder or
    # another allocator setting resumes. Keys an older checkpoint saved beyond those are ignored.
    saved, now = state.get("fingerprint", {}), cfg.fingerprint()
    default = SAUConfig().fingerprint()
    diff = sorted(k for k in now if saved.get(k, default[k]) != now[k])
    if diff:
        changes = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in diff[:6])
        raise ConfigError(f"checkpoint {str(path)!r} was written with other settings ({changes}); resume with the "
                          f"same settings or pass --overwrite to start over")
    if not torch.equal(state.get("indices", torch.empty(0)), torch.from_numpy(np.asarray(indices, dtype=np.int64))):
        raise ConfigError(f"checkpoint {str(path)!r} used another clean subset (dataset or --index changed); "
                          f"pass --overwrite to start over")
    return state


def restore(state: dict, path: Path, unlearner: Unlearner) -> dict:
    """Load ``state`` into ``unlearner`` and the global RNGs; returns the no-defense row."""
    try:
        unlearner.load_state_dict(state["unlearner"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        if rng.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        return dict(state["initial"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise RecordError(f"checkpoint {str(path)!r} is incomplete ({exc.__class__.__name__}); "
                          f"pass --overwrite to start over") from None
