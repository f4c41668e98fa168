"""Reading ``record/<attack>/attack_result.pt`` safely, and rebuilding the poisoned test set.

``attack_result.pt`` pickles PIL images and numpy arrays; it is loaded by
:func:`sau_plugin.safeload.safe_torch_load` with exactly the globals such a file needs
(numpy arrays, dtypes and scalars; PIL images, size-checked before PIL allocates), then
every field SAU uses is validated here.
"""

from __future__ import annotations

import functools
import logging
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from PIL import Image

from ..errors import RecordError, SAUError
from ..models.weights import strip_module_prefix
from ..safeload import ATTACK_RESULT_FIX, brief_error, safe_torch_load

log = logging.getLogger(__name__)

REQUIRED_KEYS = ("model_name", "num_classes", "model", "data_path", "img_size", "clean_data", "bd_train", "bd_test")
HOW_TO_FIX = ATTACK_RESULT_FIX

# ---- validation ----------------------------------------------------------------------------------------

@dataclass
class PoisonedEntry:
    index: int  # original index in the clean test split
    bd_label: int
    orig_label: int
    image: Optional[Image.Image] = None  # kept in the file
    path: Optional[str] = None  # on disk, as written in the file
    clean: bool = False  # poison_indicator 0: the clean test sample itself


@dataclass
class AttackRecord:
    """The validated content of an ``attack_result.pt``."""

    path: Path
    model_name: str
    num_classes: int
    state_dict: Dict[str, torch.Tensor]  # 'module.' prefixes stripped
    data_path: str
    img_size: Tuple[int, int, int]  # (H, W, C)
    clean_data: str
    split_size: int  # len(poison_indicator) of bd_test = size of the clean test split
    bd_test: List[PoisonedEntry]


def _bad(path: Path, message: str) -> RecordError:
    return RecordError(f"attack_result.pt at {str(path)!r}: {message}; {HOW_TO_FIX}")


def _as_int(v: Any) -> Optional[int]:
    if isinstance(v, bool) or not isinstance(v, (numbers.Integral, np.integer)):
        if isinstance(v, torch.Tensor) and v.numel() == 1 and not v.is_floating_point() and v.dtype != torch.bool:
            return int(v.item())
        return None
    return int(v)


def _int_array(v: Any) -> Optional[np.ndarray]:
    if isinstance(v, torch.Tensor):
        v = v.numpy()
    if isinstance(v, (list, tuple)):
        if not all(_as_int(x) is not None for x in v):
            return None
        return np.asarray([_as_int(x) for x in v], dtype=np.int64).reshape(-1)
    if isinstance(v, np.ndarray) and v.ndim == 1 and (v.dtype.kind in "iub" or (v.dtype.kind == "f" and
                                                                                np.all(np.isfinite(v)) and np.all(v == np.round(v)))):
        return v.astype(np.int64)
    return None


def _parse_bd_test(path: Path, state: Any, num_classes: int) -> Tuple[int, List[PoisonedEntry]]:
    if not isinstance(state, Mapping):
        raise _bad(path, f"'bd_test' must be a dataset state dict, found {type(state).__name__}")
    missing = [k for k in ("bd_data_container", "original_index_array", "poison_indicator") if k not in state]
    if missing:
        raise _bad(path, f"'bd_test' lacks key(s) {', '.join(missing)}")
    container = state["bd_data_container"]
    if not isinstance(container, Mapping) or not isinstance(container.get("data_dict"), Mapping):
        raise _bad(path, "'bd_test.bd_data_container' must be a dict with a 'data_dict' dict")
    data_dict = container["data_dict"]
    order = _int_array(state["original_index_array"])
    indicator = _int_array(state["poison_indicator"])
    if order is None or indicator is None:
        raise _bad(path, "'bd_test' original_index_array and poison_indicator must be 1-d integer arrays")
    if not np.isin(indicator, (0, 1)).all():
        raise _bad(path, "'bd_test.poison_indicator' must hold only 0 and 1")
    if order.size and (order.min() < 0 or order.max() >= indicator.size):
        raise _bad(path, f"'bd_test.original_index_array' has indices outside [0, {indicator.size})")

    def label(v: Any, what: str, idx: int) -> int:
        i = _as_int(v)
        if i is None or not 0 <= i < num_classes:
            raise _bad(path, f"poisoned test sample {idx}: {what} {v!r} is not a class in [0, {num_classes})")
        return i

    entries = []
    for idx in order.tolist():
        if indicator[idx] == 0:
            entries.append(PoisonedEntry(idx, -1, -1, clean=True))
            continue
        if idx not in data_dict:
            raise _bad(path, f"poisoned test sample {idx} is flagged in poison_indicator but absent from data_dict")
        value = data_dict[idx]
        if isinstance(value, Mapping):  # on disk: {'path', 'other_info': [bd_label, label]}
            info = value.get("other_info")
            if not isinstance(value.get("path"), str) or not isinstance(info, Sequence) or len(info) < 2:
                raise _bad(path, f"poisoned test sample {idx} must be {{'path': str, 'other_info': [bd_label, label]}}")
            entries.append(PoisonedEntry(idx, label(info[0], "bd_label", idx), label(info[1], "label", idx),
                                         path=value["path"]))
        elif isinstance(value, (tuple, list)) and len(value) >= 3 and isinstance(value[0], Image.Image):
            entries.append(PoisonedEntry(idx, label(value[1], "bd_label", idx), label(value[2], "label", idx),
                                         image=value[0]))
        else:
            raise _bad(path, f"poisoned test sample {idx} must be (PIL image, bd_label, label) or a path entry, "
                             f"found {type(value).__name__}")
    return int(indicator.size), entries


def parse_attack_result(path: Path, content: Any) -> AttackRecord:
    """Check every field SAU uses; a :class:`RecordError` says which and what was expected."""
    if not isinstance(content, Mapping):
        raise _bad(path, f"expected a dict, found {type(content).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in content]
    if missing:
        raise _bad(path, f"missing key(s) {', '.join(missing)} (BackdoorBench's save_attack_result writes "
                         f"{', '.join(REQUIRED_KEYS)})")
    name, num_classes = content["model_name"], _as_int(content["num_classes"])
    if not isinstance(name, str) or not name:
        raise _bad(path, f"'model_name' must be a model name string, found {type(name).__name__}")
    if num_classes is None or num_classes < 2:
        raise _bad(path, f"'num_classes' must be an integer >= 2, found {content['num_classes']!r}")
    sd = content["model"]
    if not isinstance(sd, Mapping) or not sd or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                        for k, v in sd.items()):
        raise _bad(path, "'model' must be a non-empty state_dict (str -> tensor)")
    data_path = content["data_path"]
    if not isinstance(data_path, str) or "data" not in data_path:
        raise _bad(path, f"'data_path' must be a path containing 'data' (e.g. './data/cifar10'), found {data_path!r}")
    size = content["img_size"]
    dims = [_as_int(v) for v in size] if isinstance(size, (Sequence, np.ndarray)) and not isinstance(size, str) else []
    if len(dims) != 3 or any(d is None or d < 1 for d in dims) or dims[2] not in (1, 3):
        raise _bad(path, f"'img_size' must be [height, width, channels] with 1 or 3 channels, found {size!r}")
    if not isinstance(content["clean_data"], str):
        raise _bad(path, f"'clean_data' must be a dataset name, found {type(content['clean_data']).__name__}")
    if content["bd_train"] is not None and not isinstance(content["bd_train"], Mapping):
        raise _bad(path, f"'bd_train' must be a dataset state or None, found {type(content['bd_train']).__name__}")
    split_size, entries = _parse_bd_test(path, content["bd_test"], num_classes)
    if not entries:
        raise _bad(path, "the poisoned test set 'bd_test' is empty, so ASR cannot be measured")
    return AttackRecord(path, name, num_classes, strip_module_prefix(sd), data_path, (dims[0], dims[1], dims[2]),
                        content["clean_data"], split_size, entries)


def read_attack_result(attack_dir: Union[Path, str], *, trust_pickle: bool = False) -> AttackRecord:
    """Load and validate ``<attack_dir>/attack_result.pt``; raises RecordError subclasses only."""
    attack_dir = Path(attack_dir)
    if not attack_dir.is_dir():
        raise RecordError(f"attack result folder {str(attack_dir)!r} not found; --result_file names a folder "
                          f"under --record_dir (e.g. record/badnet_0_1)")
    path = attack_dir / "attack_result.pt"
    content = safe_torch_load(path, trust_pickle=trust_pickle)
    try:
        return parse_attack_result(path, content)
    except SAUError:
        raise
    except Exception as exc:  # odd objects that pass isinstance checks but break on use
        raise _bad(path, f"malformed content ({brief_error(exc)})") from None


# ---- the clean data location and the poisoned test set -------------------------------------------------

def dataset_root(record_dir: Path, data_path: str) -> Path:
    """``<dir containing record>/<data_path from 'data' on>``, as load_attack_result resolves it."""
    return Path(record_dir).resolve().parent / data_path[data_path.index("data"):]


def resolve_image_path(written: str, attack_dir: Path, base_dir: Path) -> Path:
    """Find a poisoned PNG written as ``./record/<attack>/bd_test_dataset/<label>/<i>.png``.

    Tried in turn: relative to the folder holding ``record/`` (BackdoorBench's cwd), as an
    absolute path, and relative to the attack folder by the part after its name (the
    folder was moved or renamed).
    """
    p = Path(written)
    tried = [p] if p.is_absolute() else [base_dir / p]
    parts = p.parts
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == attack_dir.name and i + 1 < len(parts):
            tried.append(attack_dir.joinpath(*parts[i + 1:]))
            break
    else:
        if len(parts) >= 3:  # attack folder renamed: keep '<subfolder>/<label>/<i>.png'
            tried.append(attack_dir.joinpath(*parts[-3:]))
    for cand in tried:
        if cand.is_file():
            return cand
    raise RecordError(f"poisoned test image {written!r} not found; tried {', '.join(repr(str(c)) for c in tried)}; "
                      f"keep the attack folder's bd_test_dataset/ beside attack_result.pt")


def open_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            return im.copy()
    except (OSError, ValueError) as exc:
        raise RecordError(f"poisoned test image {str(path)!r} cannot be read ({brief_error(exc)}); re-run the attack") from None


@dataclass
class PoisonedSet:
    """The poisoned test set as BackdoorBench's bd_test yields it, in stored order."""

    original_index: np.ndarray
    bd_labels: np.ndarray
    orig_labels: np.ndarray
    load: Callable[[int], Image.Image]

    def __len__(self) -> int:
        return int(self.bd_labels.shape[0])


def poisoned_test_set(record: AttackRecord, clean_test, attack_dir: Path, base_dir: Path) -> PoisonedSet:
    """bd_test rebuilt over the clean test split (``clean_test``: a datasets.ImageSet)."""
    if record.split_size != len(clean_test):
        raise RecordError(f"bd_test was made over a test split of {record.split_size} samples but "
                          f"{clean_test.where} has {len(clean_test)}; point data_path at the dataset the attack used")
    bd, orig, sources = [], [], []
    for e in record.bd_test:
        if e.clean:
            y = int(clean_test.labels[e.index])
            bd.append(y)
            orig.append(y)
            sources.append(functools.partial(clean_test.image, e.index))
        else:
            bd.append(e.bd_label)
            orig.append(e.orig_label)
            if e.image is not None:
                sources.append(functools.partial(lambda im: im, e.image))
            else:
                sources.append(functools.partial(open_image, resolve_image_path(e.path, attack_dir, base_dir)))
    return PoisonedSet(np.asarray([e.index for e in record.bd_test], dtype=np.int64), np.asarray(bd, dtype=np.int64),
                       np.asarray(orig, dtype=np.int64), lambda i: sources[i]())

