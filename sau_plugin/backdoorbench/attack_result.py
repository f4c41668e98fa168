"""Writing ``record/<attack>/attack_result.pt`` in BackdoorBench's format.

Used by the offline default's attack generator and by the tests that build record
folders. Both of BackdoorBench's container modes are supported: poisoned images kept
in the file (``save_folder_path`` None, values ``(PIL.Image, bd_label, label)``), or
written as PNG files whose paths the file records (what BackdoorBench's attacks do).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from ..fileio import atomic_save


@dataclass
class PoisonedSplit:
    """Poisoned samples of one split (train or test) of a clean dataset."""

    split_size: int  # number of samples in the clean split (length of poison_indicator)
    indices: Sequence[int]  # original indices of the poisoned samples in that split
    images: Sequence[Image.Image]  # poisoned images, PIL (uint8)
    bd_labels: Sequence[int]
    original_labels: Sequence[int]


def split_state(split: PoisonedSplit, folder: Optional[Path], path_prefix: Optional[str], subset_to_poisoned: bool) -> dict:
    """The ``retrieve_state()`` dict of a BackdoorBench ``prepro_cls_DatasetBD_v2``.

    ``folder``: where to write PNGs (None keeps images in the file); ``path_prefix`` is
    the path written into the file for that folder (BackdoorBench writes paths relative
    to its root, e.g. ``./record/<attack>/bd_test_dataset``).
    """
    indicator = np.zeros(split.split_size, dtype=np.int64)
    data_dict = {}
    for idx, img, bd, orig in zip(split.indices, split.images, split.bd_labels, split.original_labels):
        idx, bd, orig = int(idx), int(bd), int(orig)
        indicator[idx] = 1
        if folder is None:
            data_dict[idx] = (img, bd, orig)
        else:
            sub = folder / str(orig)
            sub.mkdir(parents=True, exist_ok=True)
            img.save(sub / f"{idx}.png")
            data_dict[idx] = {"path": f"{path_prefix}/{orig}/{idx}.png", "other_info": [bd, orig]}
    index_array = np.where(indicator == 1)[0] if subset_to_poisoned else np.arange(split.split_size)
    save_folder = None if folder is None else path_prefix
    return {
        "bd_data_container": {"save_folder_path": save_folder, "data_dict": data_dict, "save_file_format": ".png"},
        "getitem_all": True,
        "getitem_all_switch": False,
        "original_index_array": index_array,
        "poison_indicator": indicator,
        "save_folder_path": save_folder,
    }


def save_attack_result(
    attack_dir: Path,
    *,
    model_name: str,
    num_classes: int,
    state_dict: dict,
    data_path: str,
    img_size: Tuple[int, int, int],
    clean_data: str,
    bd_test: PoisonedSplit,
    bd_train: Optional[PoisonedSplit] = None,
    on_disk: bool = False,
    **extra,
) -> Path:
    """Write ``attack_dir/attack_result.pt`` (atomically) and, if ``on_disk``, the PNG folders.

    Like BackdoorBench, the poisoned test set is subset to its poisoned samples and
    paths are written relative to the folder that holds ``record/``.
    """
    attack_dir = Path(attack_dir)
    attack_dir.mkdir(parents=True, exist_ok=True)
    rel = f"./{attack_dir.parent.name}/{attack_dir.name}"  # e.g. ./record/badnet_demo

    def state(split: Optional[PoisonedSplit], name: str, subset: bool):
        if split is None:
            return None
        folder = attack_dir / name if on_disk else None
        return split_state(split, folder, f"{rel}/{name}", subset)

    payload = {
        "model_name": model_name,
        "num_classes": int(num_classes),
        "model": {k: v.detach().cpu().contiguous() for k, v in state_dict.items()},
        "data_path": data_path,
        "img_size": list(img_size),
        "clean_data": clean_data,
        "bd_train": state(bd_train, "bd_train_dataset", False),
        "bd_test": state(bd_test, "bd_test_dataset", True),
        **extra,
    }
    target = attack_dir / "attack_result.pt"
    atomic_save(target, lambda p: torch.save(payload, p))
    return target
