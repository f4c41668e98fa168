"""Clean datasets read from disk without torchvision, in the order BackdoorBench reads them.

Sample order matters: the clean subset is chosen by index and the poisoned test set
refers to test samples by index, so each reader yields samples in the same order as
the reader BackdoorBench uses (torchvision's CIFAR10/CIFAR100/MNIST, its own GTSRB
reader, ImageFolder for Tiny ImageNet). Folder datasets decode images on demand.
"""

from __future__ import annotations

import csv
import gzip
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image

from ..errors import DatasetError
from ..safeload.allowlist import dataset_allowlist
from .idx import decode_idx
from ..safeload.unpickler import Damaged, RefusedGlobal, restricted_pickle_module

# torchvision's IMG_EXTENSIONS (ImageFolder's filter, compared in lower case)
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
GTSRB_CLASSES = 43


@dataclass
class ImageSet:
    """A clean split: labels up front, images decoded one at a time."""

    labels: np.ndarray  # (N,) int64
    load: Callable[[int], Image.Image]
    where: str  # for messages

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def image(self, i: int) -> Image.Image:
        return self.load(int(i))


def _array_set(images: np.ndarray, labels: Sequence[int], where: str) -> ImageSet:
    # uint8 (H, W) -> mode L, (H, W, 3) -> RGB, as torchvision builds them
    return ImageSet(np.asarray(labels, dtype=np.int64), lambda i: Image.fromarray(images[i]), where)


def _file_set(paths: List[str], labels: List[int], where: str, convert: str | None) -> ImageSet:
    def load(i: int) -> Image.Image:
        try:
            with Image.open(paths[i]) as im:
                return im.convert(convert) if convert else im.copy()
        except (OSError, ValueError) as exc:  # missing, truncated or not an image
            raise DatasetError(f"cannot read image {paths[i]!r} of {where} ({exc}); re-download the dataset") from None

    return ImageSet(np.asarray(labels, dtype=np.int64), load, where)


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise DatasetError(f"{what} not found: looked for {str(path)!r}; put the dataset there "
                           f"(BackdoorBench layout) or fix data_path in the attack result")
    return path


# ---- CIFAR (python pickled batches) ----------------------------------------------------------------

def _cifar_pickle(path: Path) -> dict:
    _need(path, "CIFAR batch file")
    try:
        with open(path, "rb") as f:
            # CIFAR batches are pickles: numpy arrays and nothing else may be reconstructed
            data = restricted_pickle_module(dataset_allowlist()).Unpickler(f, encoding="latin1").load()
    except RefusedGlobal as exc:
        raise DatasetError(f"cannot read CIFAR batch {str(path)!r} (UnpicklingError: global {exc.name} is not allowed "
                           f"in a dataset file); re-download it") from None
    except Damaged as exc:
        exc = exc.cause
        raise DatasetError(f"cannot read CIFAR batch {str(path)!r} ({exc.__class__.__name__}: {exc}); re-download it") from None
    except Exception as exc:  # a dataset file is untrusted input: any failure is a bad file
        raise DatasetError(f"cannot read CIFAR batch {str(path)!r} ({exc.__class__.__name__}: {exc}); re-download it") from None
    if not isinstance(data, dict) or "data" not in data:
        raise DatasetError(f"CIFAR batch {str(path)!r} has no 'data' entry; re-download it")
    return data


def _cifar(root: Path, files: Sequence[str], label_key: str, where: str) -> ImageSet:
    datas, labels = [], []
    for name in files:
        entry = _cifar_pickle(root / name)
        try:
            arr = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            lab = [int(v) for v in entry[label_key]]
        except (KeyError, ValueError, TypeError) as exc:
            raise DatasetError(f"CIFAR batch {str(root / name)!r} is malformed ({exc}); re-download it") from None
        if len(lab) != arr.shape[0]:
            raise DatasetError(f"CIFAR batch {str(root / name)!r}: {arr.shape[0]} images but {len(lab)} labels")
        datas.append(arr)
        labels += lab
    images = np.concatenate(datas).transpose(0, 2, 3, 1)  # HWC, as torchvision keeps them
    return _array_set(images, labels, where)


def cifar10(root: Path, train: bool) -> ImageSet:
    base = _need(root / "cifar-10-batches-py", "CIFAR-10 folder")
    files = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    return _cifar(base, files, "labels", f"cifar10 {'train' if train else 'test'} ({base})")


def cifar100(root: Path, train: bool) -> ImageSet:
    base = _need(root / "cifar-100-python", "CIFAR-100 folder")
    return _cifar(base, ["train" if train else "test"], "fine_labels", f"cifar100 {'train' if train else 'test'} ({base})")


# ---- MNIST (idx files, torchvision's MNIST/raw layout) -------------------------------------------------

def _read_idx(path: Path, ndim: int) -> np.ndarray:
    candidates = [path, path.with_name(path.name + ".gz")]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        raise DatasetError(f"MNIST file not found: looked for {str(candidates[0])!r} and {str(candidates[1])!r}")
    try:
        raw = gzip.decompress(found.read_bytes()) if found.suffix == ".gz" else found.read_bytes()
        return decode_idx(raw, ndim=ndim)
    except (OSError, EOFError, ValueError) as exc:  # IdxError is a ValueError; gzip raises the others
        raise DatasetError(f"MNIST file {str(found)!r} is not a valid idx file ({exc}); re-download it") from None


def mnist(root: Path, train: bool) -> ImageSet:
    raw = _need(root / "MNIST" / "raw", "MNIST folder")
    prefix = "train" if train else "t10k"
    images = _read_idx(raw / f"{prefix}-images-idx3-ubyte", 3)
    labels = _read_idx(raw / f"{prefix}-labels-idx1-ubyte", 1)
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(f"MNIST {prefix} in {str(raw)!r}: {images.shape[0]} images but {labels.shape[0]} labels")
    return _array_set(images, labels, f"mnist {prefix} ({raw})")


# ---- GTSRB (BackdoorBench's dataset/GTSRB.py layout) -----------------------------------------------------

def _gtsrb_csv(csv_path: Path, image_dir: Path) -> Tuple[List[str], List[int]]:
    _need(csv_path, "GTSRB annotation file")
    paths, labels = [], []
    try:
        with open(csv_path, newline="") as f:
            rows = csv.reader(f, delimiter=";")
            next(rows, None)  # header
            for row in rows:
                if row:
                    paths.append(str(image_dir / row[0]))
                    labels.append(int(row[7]))  # ClassId
    except (IndexError, ValueError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"GTSRB annotation file {str(csv_path)!r} is malformed ({exc}); expected ';'-separated "
                           f"rows with the file name in column 0 and ClassId in column 7") from None
    return paths, labels


def gtsrb(root: Path, train: bool) -> ImageSet:
    if train:
        base = _need(root / "Train", "GTSRB Train folder")
        paths, labels = [], []
        for c in range(GTSRB_CLASSES):  # all 43 class folders, in order, as the reference reads them
            folder = base / format(c, "05d")
            p, l = _gtsrb_csv(folder / f"GT-{c:05d}.csv", folder)
            paths += p
            labels += l
    else:
        base = _need(root / "Test", "GTSRB Test folder")
        paths, labels = _gtsrb_csv(base / "GT-final_test.csv", base)
    return _file_set(paths, labels, f"gtsrb {'train' if train else 'test'} ({base})", convert=None)


# ---- Tiny ImageNet (ImageFolder over tiny-imagenet-200/{train,val}) ----------------------------------------

def _image_folder(root: Path) -> Tuple[List[str], List[int]]:
    """torchvision ImageFolder order: classes sorted, then sorted os.walk, sorted file names."""
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
    if not classes:
        raise DatasetError(f"no class folders in {str(root)!r}")
    paths, labels = [], []
    for idx, cls in enumerate(classes):
        for dirpath, _, fnames in sorted(os.walk(root / cls, followlinks=True)):
            for fname in sorted(fnames):
                if fname.lower().endswith(IMG_EXTENSIONS):
                    paths.append(os.path.join(dirpath, fname))
                    labels.append(idx)
    return paths, labels


def _tiny_val_annotations(val: Path) -> Tuple[List[str], List[int]]:
    """The original val layout (images/ + val_annotations.txt), ordered as BackdoorBench's
    one-time reorganisation into class folders would leave it."""
    by_class: Dict[str, List[str]] = {}
    try:
        for line in (val / "val_annotations.txt").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2:
                by_class.setdefault(parts[1], []).append(parts[0])
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read {str(val / 'val_annotations.txt')!r} ({exc})") from None
    paths, labels = [], []
    for idx, cls in enumerate(sorted(by_class)):
        for fname in sorted(by_class[cls]):
            paths.append(str(val / "images" / fname))
            labels.append(idx)
    return paths, labels


def tiny(root: Path, train: bool) -> ImageSet:
    base = _need(root / "tiny-imagenet-200", "Tiny ImageNet folder")
    split = _need(base / ("train" if train else "val"), "Tiny ImageNet split folder")
    if not train and (split / "val_annotations.txt").is_file():
        paths, labels = _tiny_val_annotations(split)
    else:
        paths, labels = _image_folder(split)
    return _file_set(paths, labels, f"tiny {'train' if train else 'val'} ({split})", convert="RGB")


READERS: Dict[str, Callable[[Path, bool], ImageSet]] = {
    "cifar10": cifar10, "cifar100": cifar100, "mnist": mnist, "gtsrb": gtsrb, "tiny": tiny,
}


def load_split(name: str, root: Path, train: bool) -> ImageSet:
    """The clean train or test split of dataset ``name`` stored under ``root``."""
    reader = READERS.get(name)
    if reader is None:
        raise DatasetError(f"dataset {name!r} cannot be read without BackdoorBench; standalone readers: "
                           f"{', '.join(READERS)} (run from a BackdoorBench root with --loader backdoorbench otherwise)")
    data = reader(Path(root), train)
    if len(data) == 0:
        raise DatasetError(f"{data.where} holds no samples")
    return data
