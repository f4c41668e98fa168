"""One normaliser: PixelSpace.normalize_uint8 gives bitwise the float32 result of the formulas
the defense, the report and the demo each wrote before (written out inline here)."""

import numpy as np
import pytest
import torch

from sau_plugin.backdoorbench.transforms import NORMALIZATION
from sau_plugin.core.perturbation import PixelSpace


@pytest.mark.parametrize("dataset", sorted(NORMALIZATION))
def test_normalize_uint8_equals_to_tensor_then_normalize(dataset):
    mean, std = NORMALIZATION[dataset]
    u8 = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (4, len(mean), 5, 6), dtype=np.uint8))
    m = torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)
    out = PixelSpace(mean, std).normalize_uint8(u8)
    assert out.dtype == torch.float32
    assert torch.equal(out, (u8.float() / 255 - m) / s)  # the test transform: ToTensor, then Normalize
    assert torch.equal(PixelSpace(mean, std).normalize(u8.float() / 255), (u8.float() / 255 - m) / s)  # the report


def test_one_channel_mean_on_mnist_matches_the_demos_scalars():
    u8 = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (3, 1, 28, 28), dtype=np.uint8))
    out = PixelSpace(*NORMALIZATION["mnist"]).normalize_uint8(u8)
    assert torch.equal(out, (u8.float().div(255) - 0.5) / 0.5)
