"""Where the clean splits and the poisoned test set come from: ``--loader``.

* ``standalone``: the plugin's own readers (datasets.py) and bd_test rebuilt from the
  validated record (record.py); needs neither BackdoorBench nor torchvision.
* ``backdoorbench``: BackdoorBench's ``utils.save_load_attack.load_attack_result``,
  importable when the working directory is a BackdoorBench root. It is called only
  after the plugin's safe reading of the same file has passed.
* ``auto``: ``backdoorbench`` when it imports, else ``standalone``.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

from ..errors import ConfigError, RecordError, SAUError
from .datasets import ImageSet, load_split
from .record import AttackRecord, PoisonedSet, dataset_root, poisoned_test_set
from .transforms import stack_images

log = logging.getLogger(__name__)


@dataclass
class LoadedData:
    clean_train: ImageSet
    clean_test: ImageSet
    bd_test: PoisonedSet
    loader: str  # which loader was used
    state_dict: Optional[Dict[str, torch.Tensor]] = None  # BackdoorBench's remapped weights, if it loaded them


def _import_backdoorbench() -> Tuple[Optional[Any], str]:
    """(module, '') when BackdoorBench's loader imports from the working folder, else (None, reason).

    BackdoorBench's modules import each other as top-level packages (utils, models), so its
    root must be on Python's path, as its own scripts assume: ``python -m sau_plugin`` and the
    launcher of ``install-into`` run from that root put it there; this module does not.
    """
    root = Path.cwd()
    if not (root / "utils" / "save_load_attack.py").is_file():
        return None, f"{str(root)!r} is not a BackdoorBench root (no utils/save_load_attack.py)"
    try:
        module = importlib.import_module("utils.save_load_attack")
    except Exception as exc:  # e.g. torchvision missing or built for another torch
        return None, f"importing BackdoorBench's utils.save_load_attack failed ({exc.__class__.__name__}: {exc})"
    where = Path(getattr(module, "__file__", "") or "").resolve()
    if where != (root / "utils" / "save_load_attack.py").resolve():
        return None, (f"the working folder is not on Python's path, so 'utils.save_load_attack' came from {str(where)!r} "
                      f"instead of {str(root)!r}; run 'python -m sau_plugin defend ...' or the launcher "
                      f"'python ./defense/sau_plugin.py ...' from the BackdoorBench root")
    return module, ""


@contextlib.contextmanager
def _full_load_allowed():
    """BackdoorBench's loader calls torch.load() without weights_only, which torch >= 2.6
    refuses unless this variable is set; only used after the safe check has passed."""
    old = os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = old


def _labels_of(ds: Any) -> np.ndarray:
    for attr in ("targets", "labels"):
        if hasattr(ds, attr):
            return np.asarray([int(v) for v in getattr(ds, attr)], dtype=np.int64)
    return np.asarray([int(ds[i][1]) for i in range(len(ds))], dtype=np.int64)


def _from_backdoorbench(module: Any, record: AttackRecord) -> LoadedData:
    with _full_load_allowed():
        result = module.load_attack_result(str(record.path))
    train = result["clean_train"].wrapped_dataset  # datasets without transform: (PIL, label)
    test = result["clean_test"].wrapped_dataset
    bd = result["bd_test"].wrapped_dataset
    items = [bd[i] for i in range(len(bd))]  # (img, bd_label, original_index, poisoned, original_label)
    bd_set = PoisonedSet(
        np.asarray([int(it[2]) for it in items], dtype=np.int64),
        np.asarray([int(it[1]) for it in items], dtype=np.int64),
        np.asarray([int(it[4]) for it in items], dtype=np.int64),
        lambda i: items[i][0],
    )
    return LoadedData(
        ImageSet(_labels_of(train), lambda i: train[i][0], "BackdoorBench clean_train"),
        ImageSet(_labels_of(test), lambda i: test[i][0], "BackdoorBench clean_test"),
        bd_set, "backdoorbench", dict(result["model"]),
    )


def load_data(record: AttackRecord, attack_dir: Path, record_dir: Path, loader: str = "auto") -> LoadedData:
    """Clean train/test splits and the poisoned test set for ``record``."""
    if loader in ("auto", "backdoorbench"):
        module, why = _import_backdoorbench()
        if module is None:
            if loader == "backdoorbench":
                raise ConfigError(f"--loader backdoorbench: {why}; run from a BackdoorBench root or use --loader standalone")
            log.info("loader: standalone (%s)", why)
        else:
            try:
                return _from_backdoorbench(module, record)
            except SAUError:
                raise
            except Exception as exc:
                raise RecordError(f"BackdoorBench's load_attack_result failed on {str(record.path)!r} "
                                  f"({exc.__class__.__name__}: {exc}); try --loader standalone") from None
    root = dataset_root(record_dir, record.data_path)
    train = load_split(record.clean_data, root, train=True)
    test = load_split(record.clean_data, root, train=False)
    base_dir = Path(record_dir).resolve().parent
    return LoadedData(train, test, poisoned_test_set(record, test, attack_dir, base_dir), "standalone")


def eval_tensors(record: AttackRecord, data: LoadedData) -> Tuple[Tuple[torch.Tensor, torch.Tensor],
                                                                  Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The clean test set ``(uint8 images, labels)`` and the poisoned test set
    ``(uint8 images, backdoor labels, true labels)``, resized to the record's img_size."""
    h, w, c = record.img_size
    test = (stack_images((data.clean_test.image(i) for i in range(len(data.clean_test))), (h, w), c),
            torch.from_numpy(data.clean_test.labels))
    bd = (stack_images((data.bd_test.load(i) for i in range(len(data.bd_test))), (h, w), c),
          torch.from_numpy(data.bd_test.bd_labels), torch.from_numpy(data.bd_test.orig_labels))
    return test, bd
