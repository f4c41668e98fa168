"""BackdoorBench's test transform without torchvision.

``Resize((H, W))`` (bilinear, as torchvision does on PIL images) -> ``ToTensor`` ->
``Normalize(mean, std)``. Images are kept as uint8 tensors (N, C, H, W) after the
resize, a quarter of the memory of floats, and normalised batch by batch.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from ..core.perturbation import PixelSpace
from ..errors import ConfigError

# get_dataset_normalization() in BackdoorBench's dataset_and_transform_generate.py
NORMALIZATION = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "mnist": ((0.5,), (0.5,)),
    "tiny": ((0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262)),
    "gtsrb": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    "celeba": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


def normalization(dataset: str) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """(mean, std) of ``dataset``, as BackdoorBench normalises it."""
    try:
        return NORMALIZATION[dataset]
    except KeyError:
        raise ConfigError(f"no normalisation known for dataset {dataset!r}; supported: {', '.join(NORMALIZATION)}") from None


def pil_to_uint8(img: Image.Image, size: Tuple[int, int], channels: int) -> torch.Tensor:
    """One PIL image -> uint8 tensor (C, H, W): Resize(H, W) then ToTensor's layout.

    The mode is made to match ``channels`` (a PNG may come back as RGBA or P), which
    ToTensor alone would not do.
    """
    mode = "L" if channels == 1 else "RGB"
    if img.mode != mode:
        img = img.convert(mode)
    h, w = size
    if img.size != (w, h):  # torchvision skips the resize when the size already matches
        img = img.resize((w, h), Image.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def stack_images(images: Iterable[Image.Image], size: Tuple[int, int], channels: int) -> torch.Tensor:
    """PIL images -> uint8 tensor (N, C, H, W)."""
    tensors = [pil_to_uint8(img, size, channels) for img in images]
    if not tensors:
        return torch.zeros((0, channels, *size), dtype=torch.uint8)
    return torch.stack(tensors)


def normalized_batches(
    images: torch.Tensor, *labels: torch.Tensor, mean: Sequence[float], std: Sequence[float], batch_size: int, device,
    starts: Optional[Iterable[int]] = None,
) -> Iterator[Tuple[torch.Tensor, ...]]:
    """Batches ``(x, *labels)`` in order, each image batch normalised on ``device``; ``starts``:
    the batches' first indices (default all; a rank's share: ``DataParallel.batch_starts``)."""
    space = PixelSpace(mean, std).to(device)
    for i in range(0, images.shape[0], batch_size) if starts is None else starts:
        x = space.normalize_uint8(images[i:i + batch_size].to(device))
        yield (x, *(t[i:i + batch_size].to(device) for t in labels))
