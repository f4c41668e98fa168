"""Perturbation sets S (paper eq. 13, constraint eps in S) and the pixel-space plumbing.

The perturbation lives in [0, 1] pixel space while the models see normalised images:
x~ = normalize(denormalize(x) + eps). As in the reference, x~ is not clipped to
[0, 1].
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch


class PixelSpace:
    """Normalisation ``(x - mean) / std`` per channel, and its inverse."""

    def __init__(self, mean: Sequence[float] = (0.0,), std: Sequence[float] = (1.0,)):
        self.mean = torch.as_tensor(mean, dtype=torch.float64).reshape(1, -1, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float64).reshape(1, -1, 1, 1)

    def to(self, device) -> "PixelSpace":
        self.mean, self.std = self.mean.to(device), self.std.to(device)
        return self

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std.to(x) + self.mean.to(x)

    def normalize(self, x01: torch.Tensor) -> torch.Tensor:
        return (x01 - self.mean.to(x01)) / self.std.to(x01)

    def normalize_uint8(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 images -> normalised float32: ToTensor's ``/ 255`` then Normalize (the test transform)."""
        return self.normalize(x.float() / 255)

    def perturb(self, x01: torch.Tensor, pert: torch.Tensor) -> torch.Tensor:
        """Normalised x~ from an image already in pixel space and a perturbation."""
        return self.normalize(x01 + pert)


def project(pert: torch.Tensor, norm: str, bound: float) -> torch.Tensor:
    """Proj_S: put every sample's perturbation inside its norm ball (vectorised).

    L_inf clamps element-wise; L2 / L1 rescale a sample whose norm exceeds ``bound``
    onto the sphere (the reference's rescaling, without its Python loop) and leave
    samples already inside unchanged. ``Reg`` is the reference's unconstrained option:
    no projection (``bound`` only sets the 'max' / 'min' initial value).
    """
    if norm == "L_inf":
        return pert.clamp(-bound, bound)
    if norm == "Reg":
        return pert
    flat = pert.flatten(1)
    if norm == "L2":
        size = flat.norm(p=2, dim=1)
    elif norm == "L1":
        size = flat.abs().sum(dim=1)
    else:
        raise ValueError(f"unknown norm {norm!r}; expected L_inf, L2, L1 or Reg")
    scale = torch.where(size > bound, bound / size.clamp_min(1e-12), torch.ones_like(size))
    return pert * scale.view(-1, *([1] * (pert.dim() - 1)))


def init_perturbation(
    like: torch.Tensor, init: str, norm: str, bound: float, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """Initial eps: 'max' = +bound everywhere, 'min' = -bound, 'zero', 'random' = U[0, 1);
    then projected (so 'max' under L2/L1 becomes the rescaled constant image)."""
    if init == "zero":
        pert = torch.zeros_like(like)
    elif init == "max":
        pert = torch.full_like(like, bound)
    elif init == "min":
        pert = torch.full_like(like, -bound)
    elif init == "random":
        # Drawn on the CPU generator so that runs are reproducible on any device.
        pert = torch.rand(like.shape, generator=generator, dtype=like.dtype).to(like.device)
    else:
        raise ValueError(f"unknown init {init!r}; expected max, min, zero or random")
    return project(pert, norm, bound)
