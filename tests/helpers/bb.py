"""Builders for the BackdoorBench integration tests: tiny clean datasets in each on-disk
format the plugin reads, and record folders with an attack_result.pt in both container
modes (images in the file, or PNGs on disk as BackdoorBench's attacks write them).

Everything is small (8x8 inputs, a PreAct-ResNet18 of width 4) so a whole defense runs
in a second or two on a CPU.
"""

from __future__ import annotations

import csv
import gzip
import os
import pickle
import struct
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch
from PIL import Image

from sau_plugin.backdoorbench.attack_result import PoisonedSplit, save_attack_result
from sau_plugin.backdoorbench.datasets import load_split
from sau_plugin.safeload import load_trusted
from sau_plugin.models import create_model

TARGET = 0  # all-to-one target label of the test attacks
IMG = 8  # model input size (img_size in the record); the datasets keep their native size


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


# ---- clean datasets on disk ---------------------------------------------------------------------------

def write_cifar10(root: Path, per_batch: int = 12, n_test: int = 30, seed: int = 0) -> Path:
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True, exist_ok=True)
    r = _rng(seed)
    files = [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]
    for name, n in files:
        entry = {"batch_label": name, "labels": [int(v) for v in r.integers(0, 10, n)],
                 "data": r.integers(0, 256, (n, 3072), dtype=np.uint8), "filenames": [f"{i}.png" for i in range(n)]}
        (base / name).write_bytes(pickle.dumps(entry, protocol=2))
    return root


def write_cifar100(root: Path, n_train: int = 40, n_test: int = 24, seed: int = 1) -> Path:
    base = root / "cifar-100-python"
    base.mkdir(parents=True, exist_ok=True)
    r = _rng(seed)
    for name, n in (("train", n_train), ("test", n_test)):
        entry = {"fine_labels": [int(v) for v in r.integers(0, 100, n)], "coarse_labels": [0] * n,
                 "data": r.integers(0, 256, (n, 3072), dtype=np.uint8)}
        (base / name).write_bytes(pickle.dumps(entry, protocol=2))
    return root


def write_mnist(root: Path, n_train: int = 40, n_test: int = 24, gz: bool = False, seed: int = 2) -> Path:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    r = _rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = r.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = r.integers(0, 10, n).astype(np.uint8)
        blobs = {f"{prefix}-images-idx3-ubyte": struct.pack(">HBBIII", 0, 8, 3, n, 28, 28) + images.tobytes(),
                 f"{prefix}-labels-idx1-ubyte": struct.pack(">HBBI", 0, 8, 1, n) + labels.tobytes()}
        for name, blob in blobs.items():
            if gz:
                (raw / f"{name}.gz").write_bytes(gzip.compress(blob))
            else:
                (raw / name).write_bytes(blob)
    return root


def _gtsrb_rows(folder: Path, labels: List[int], r) -> List[list]:
    rows = []
    for i, y in enumerate(labels):
        fname = f"{i:05d}_{y:05d}.ppm"
        Image.fromarray(r.integers(0, 256, (6, 5, 3), dtype=np.uint8)).save(folder / fname)
        rows.append([fname, 5, 6, 0, 0, 5, 6, y])
    return rows


def write_gtsrb(root: Path, per_class: int = 1, n_test: int = 20, seed: int = 3) -> Path:
    r = _rng(seed)
    header = ["Filename", "Width", "Height", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2", "ClassId"]
    for c in range(43):
        folder = root / "Train" / f"{c:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        rows = _gtsrb_rows(folder, [c] * per_class, r)
        with open(folder / f"GT-{c:05d}.csv", "w", newline="") as f:
            csv.writer(f, delimiter=";").writerows([header] + rows)
    test = root / "Test"
    test.mkdir(parents=True, exist_ok=True)
    rows = _gtsrb_rows(test, [int(v) for v in r.integers(0, 43, n_test)], r)
    with open(test / "GT-final_test.csv", "w", newline="") as f:
        csv.writer(f, delimiter=";").writerows([header] + rows)
    return root


def write_tiny(root: Path, wnids=("n01443537", "n01629819", "n01641577"), per_class: int = 6, val_per_class: int = 4,
               val_layout: str = "annotations", seed: int = 4) -> Path:
    base = root / "tiny-imagenet-200"
    r = _rng(seed)
    for w in wnids:
        folder = base / "train" / w / "images"
        folder.mkdir(parents=True, exist_ok=True)
        (base / "train" / w / f"{w}_boxes.txt").write_text("")
        for i in range(per_class):
            Image.fromarray(r.integers(0, 256, (10, 10, 3), dtype=np.uint8)).save(folder / f"{w}_{i}.JPEG")
    val = base / "val"
    lines = []
    for j in range(val_per_class * len(wnids)):
        w = wnids[j % len(wnids)]
        fname = f"val_{j}.JPEG"
        folder = val / "images" if val_layout == "annotations" else val / w
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(r.integers(0, 256, (10, 10, 3), dtype=np.uint8)).save(folder / fname)
        lines.append(f"{fname}\t{w}\t0\t0\t9\t9")
    if val_layout == "annotations":
        (val / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return root


WRITERS = {"cifar10": write_cifar10, "cifar100": write_cifar100, "mnist": write_mnist, "gtsrb": write_gtsrb,
           "tiny": write_tiny}
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "mnist": 10, "gtsrb": 43, "tiny": 3}
CHANNELS = {"mnist": 1}


# ---- record folders -------------------------------------------------------------------------------------

def tiny_model(dataset: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("preactresnet18", NUM_CLASSES[dataset], in_channels=CHANNELS.get(dataset, 3), width=4)


def add_trigger(img: Image.Image) -> Image.Image:
    """A BadNets-like white 3x3 patch in the bottom-right corner."""
    arr = np.array(img)
    arr[-3:, -3:] = 255
    return Image.fromarray(arr)


def make_record(base: Path, dataset: str = "cifar10", *, attack: str = "attack", on_disk: bool = True,
                module_prefix: bool = True, model: Optional[torch.nn.Module] = None, write_data: bool = True,
                data_kwargs: Optional[dict] = None, **extra) -> Tuple[Path, torch.nn.Module]:
    """``base/data/<dataset>`` (clean data) and ``base/record/<attack>/attack_result.pt``.

    The poisoned test set holds every test sample whose label is not TARGET, with a
    trigger and backdoor label TARGET, as BackdoorBench's all-to-one bd_test does.
    """
    data_root = base / "data" / dataset
    if write_data:
        WRITERS[dataset](data_root, **(data_kwargs or {}))
    test = load_split(dataset, data_root, train=False)
    idx = [i for i in range(len(test)) if int(test.labels[i]) != TARGET]
    split = PoisonedSplit(len(test), idx, [add_trigger(test.image(i)) for i in idx], [TARGET] * len(idx),
                          [int(test.labels[i]) for i in idx])
    model = model or tiny_model(dataset)
    sd = model.state_dict()
    if module_prefix:
        sd = {f"module.{k}": v for k, v in sd.items()}
    attack_dir = base / "record" / attack
    save_attack_result(attack_dir, model_name="preactresnet18", num_classes=NUM_CLASSES[dataset], state_dict=sd,
                       data_path=f"./data/{dataset}", img_size=(IMG, IMG, CHANNELS.get(dataset, 3)),
                       clean_data=dataset, bd_test=split, on_disk=on_disk, **extra)
    return attack_dir, model


# ---- shared by the test modules ------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]
YAML = {d: REPO / "defense_configs" / "sau" / f"{d}.yaml" for d in ("cifar10", "cifar100", "gtsrb", "tiny")}


def yaml_for(dataset: str) -> Path:
    return YAML.get(dataset, REPO / "defense_configs" / "sau" / "config.yaml")


def cli_args(base: Path, dataset: str = "cifar10", *extra: str, attack: str = "attack") -> List[str]:
    """A fast ``defend`` command line for the tiny records (1 epoch, CPU, fp32, no progress)."""
    return ["defend", "--result_file", attack, "--record_dir", str(base / "record"), "--yaml_path",
            str(yaml_for(dataset)), "--dataset", dataset, "--device", "cpu", "--amp", "False", "--n_rounds", "1",
            "--ratio", "0.5", "--batch_size", "16", "--no_progress", *extra]


def rewrite_pickle(src: Path, dst: Path, mutate) -> None:
    """Copy a torch.save zip with its ``data.pkl`` replaced by ``mutate(bytes)`` (a valid zip
    again, so the mutation reaches the unpickler instead of the zip reader)."""
    import zipfile

    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            zout.writestr(info.filename, mutate(data) if info.filename.endswith("/data.pkl") else data)


def touch_marker(path) -> None:
    """A module-level function a malicious pickle could ask to call."""
    Path(path).write_text("code ran")


# ---------------------------------------------------------------------------------------------
# editing a record: bad keys and unsafe pickles for the error tests

DROP = object()  # as a value in edit_attack_result: remove that key


def edit_attack_result(attack_dir: Path, **changes) -> Path:
    """Rewrite attack_result.pt with some keys changed (a ``DROP`` value removes the key)."""
    path = attack_dir / "attack_result.pt"
    content = load_trusted(path)
    for k, v in changes.items():
        if v is DROP:
            content.pop(k)
        else:
            content[k] = v
    torch.save(content, path)
    return path


class RunsCode:
    """Pickles as a call to os.system: loading it with weights_only=False would run the command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))
