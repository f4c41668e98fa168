"""Everything a defense run reads, checked before anything is written: the attack record,
the data, the backdoored model, the test sets and the clean subset, as tensors."""

import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn

from ..backdoorbench.loaders import LoadedData, eval_tensors, load_data
from ..backdoorbench.record import AttackRecord, read_attack_result
from ..backdoorbench.transforms import normalization, stack_images
from ..core import PixelSpace
from ..config import SAUConfig
from ..errors import ConfigError, DatasetError, DeviceError
from ..models import build_model
from .outputs import OutputDir

log = logging.getLogger("sau_plugin")


@dataclass
class Inputs:
    """Test images uint8 (normalised per batch); the clean subset already normalised
    (the Unlearner holds it on the device)."""

    record: AttackRecord
    data: LoadedData
    model: nn.Module  # the backdoored model, on the CPU
    mean: tuple
    std: tuple
    test: Tuple[torch.Tensor, torch.Tensor]  # images, labels
    bd_test: Tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # images, backdoor labels, true labels
    indices: np.ndarray  # the clean subset's indices into the clean training set
    clean: Tuple[torch.Tensor, torch.Tensor]


def resolve_device(name: str) -> torch.device:
    """'cpu', 'cuda', 'cuda:N', 'mps' or 'auto': one process's device ('cuda:0,1' is one process per GPU:
    ``run/distributed.py``)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {name} asked for CUDA, but CUDA is not available here (torch "
                              f"{torch.__version__}, {'built without CUDA' if torch.version.cuda is None else 'no GPU visible'}); "
                              f"pass --device cpu")
        index = int(name[5:].split(",")[0]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise DeviceError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) visible")
        return torch.device("cuda", index)
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceError("--device mps asked for, but MPS is not available here; pass --device cpu")
    return torch.device(name)


def choose_clean_indices(n: int, cfg: SAUConfig) -> np.ndarray:
    """BackdoorBench's choose_index: ``--index`` file, else random.seed(seed); random.sample."""
    if cfg.index:
        path = Path(cfg.index)
        if not path.is_file():
            raise DatasetError(f"index file {str(path)!r} not found; pass --index pointing to a text file of sample indices")
        try:
            idx = np.atleast_1d(np.loadtxt(path, dtype=np.int64)).reshape(-1)
        except ValueError as exc:
            raise DatasetError(f"index file {str(path)!r} must hold integers, one per line ({exc})") from None
        if idx.size == 0:
            raise DatasetError(f"index file {str(path)!r} holds no index; list the clean samples to use")
        bad = idx[(idx < 0) | (idx >= n)]
        if bad.size:
            raise DatasetError(f"index file {str(path)!r} has {bad.size} index(es) outside [0, {n}) of the clean "
                               f"training set, e.g. {int(bad[0])}; regenerate it for this dataset")
        return idx
    k = int(n * cfg.ratio)
    if k < 1:
        raise DatasetError(f"ratio {cfg.ratio} of {n} clean training samples selects no sample; "
                           f"use --ratio >= {1 / n:.2g} or --index")
    return np.asarray(random.Random(cfg.random_seed).sample(range(n), k), dtype=np.int64)


def check_labels(labels: np.ndarray, num_classes: int, where: str) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DatasetError(f"{where} has labels outside [0, {num_classes}) of the attacked model; "
                           f"the dataset does not match the attack result")


def load_inputs(cfg: SAUConfig, *, record: Optional[AttackRecord] = None,
                timings: Optional[Dict[str, float]] = None) -> Inputs:
    """Everything a run reads, checked, without writing anything (also for benchmarks and
    notebooks). ``record``: the attack result when the caller has read it already;
    ``timings`` receives the seconds of ``load`` and ``clean_subset``."""
    timings = {} if timings is None else timings
    paths = OutputDir.of(cfg)
    t = time.perf_counter()
    if record is None or record.path != paths.attack_dir / "attack_result.pt":
        record = read_attack_result(paths.attack_dir, trust_pickle=cfg.trust_pickle)
    if cfg.dataset != record.clean_data:
        raise ConfigError(f"--dataset {cfg.dataset} but the attack result was made on {record.clean_data!r}; "
                          f"pass --dataset {record.clean_data} or leave --dataset out (the record names its dataset)")
    if cfg.model != record.model_name:
        log.warning("config model %r differs from the attack's model %r; using the attack's", cfg.model, record.model_name)
    data = load_data(record, paths.attack_dir, paths.record_dir, cfg.loader)
    model = build_model(record.model_name, record.num_classes, data.state_dict or record.state_dict,
                        what=f"the weights in {str(record.path)!r}")
    mean, std = normalization(record.clean_data)
    h, w, c = record.img_size
    check_labels(data.clean_train.labels, record.num_classes, data.clean_train.where)
    check_labels(data.clean_test.labels, record.num_classes, data.clean_test.where)
    test, bd_test = eval_tensors(record, data)
    timings["load"] = time.perf_counter() - t

    t = time.perf_counter()
    indices = choose_clean_indices(len(data.clean_train), cfg)
    clean = (PixelSpace(mean, std).normalize_uint8(stack_images((data.clean_train.image(i) for i in indices), (h, w), c)),
             torch.from_numpy(data.clean_train.labels[indices]))
    timings["clean_subset"] = time.perf_counter() - t
    return Inputs(record, data, model, mean, std, test, bd_test, indices, clean)
