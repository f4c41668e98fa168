"""Backdoor triggers and label maps: pure functions on uint8 image batches.

Images are ``(N, H, W)`` (grayscale, as MNIST) or ``(N, H, W, C)`` uint8 arrays, as
BackdoorBench's transforms see them (numpy HWC, 0..255); every trigger returns a new
uint8 array of the same shape and never modifies its input. Each trigger names the
BackdoorBench default it mirrors. Float results are clipped to [0, 255] and rounded to
the nearest level (BackdoorBench truncates; rounding keeps an identity warp exact, so a
WaNet image differs from the clean one only by its warp, not by a one-level darkening).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

PATTERN_SEED = 0  # fixed seed of the generated Blended / LF / WaNet patterns: every run gets the same trigger


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(x, 0, 255)).astype(np.uint8)


def _pattern_shape(images: np.ndarray) -> tuple:
    return tuple(images.shape[1:])


# ---- label maps (BackdoorBench's AllToOne_attack / AllToAll_shiftLabelAttack) ----------------------------
def all_to_one(labels: np.ndarray, target: int = 0) -> np.ndarray:
    return np.full_like(labels, target)


def all_to_all(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """y -> (y + 1) mod K."""
    return (labels + 1) % num_classes


# ---- BadNets -------------------------------------------------------------------------------------------------
def badnet(images: np.ndarray, size: int = 3, value: int = 255) -> np.ndarray:
    """A ``size`` x ``size`` white square in the bottom-right corner.

    Mirrors BackdoorBench's ``resource/badnet/trigger_image.png`` (3x3 white square at
    the bottom-right, stamped where the mask is non-zero); here drawn at the image's own
    resolution rather than resized from 32x32.
    """
    out = images.copy()
    out[:, -size:, -size:, ...] = value
    return out


# ---- Blended ----------------------------------------------------------------------------------------------------
def blend_pattern(shape: tuple, seed: int = PATTERN_SEED) -> np.ndarray:
    """A fixed uniform-noise image (uint8) of ``shape`` (H, W[, C]), the same for a given seed.

    Stands in for BackdoorBench's ``hello_kitty.jpeg``, which is not shipped here; a random
    noise key is the other pattern of the Blended paper (Chen et al., 2017).
    """
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def blended(images: np.ndarray, pattern: Optional[np.ndarray] = None, alpha: float = 0.2) -> np.ndarray:
    """(1 - alpha) * x + alpha * pattern; BackdoorBench's default alpha is 0.2 (train and test)."""
    if pattern is None:
        pattern = blend_pattern(_pattern_shape(images))
    return _to_uint8((1 - alpha) * images.astype(np.float32) + alpha * pattern.astype(np.float32))


# ---- SIG ----------------------------------------------------------------------------------------------------------
def sig_pattern(shape: tuple, delta: float = 40, f: float = 6) -> np.ndarray:
    """delta * sin(2 pi j f / W) for column j, constant down each column; float32 of ``shape``."""
    width = shape[1]
    wave = delta * np.sin(2 * np.pi * np.arange(width) * f / width)
    wave = wave.reshape((1, width) + (1,) * (len(shape) - 2))
    return np.broadcast_to(wave, shape).astype(np.float32)


def sig(images: np.ndarray, delta: float = 40, f: float = 6) -> np.ndarray:
    """Additive horizontal sinusoid (Barni et al., 2019); BackdoorBench's defaults delta=40, f=6.

    SIG is a clean-label attack: the generator poisons only target-class training images
    and keeps their labels (see ``poison.poison_indices``).
    """
    return _to_uint8(images.astype(np.float32) + sig_pattern(_pattern_shape(images), delta, f))


# ---- LF (low frequency) ----------------------------------------------------------------------------------------
def lf_pattern(shape: tuple, cutoff: int = 3, amplitude: float = 0.2 * 255, seed: int = PATTERN_SEED) -> np.ndarray:
    """A smooth, non-negative pattern: seeded noise low-pass filtered, min-max scaled to [0, amplitude].

    BackdoorBench's LF trigger is a universal adversarial perturbation of a clean model,
    Gaussian low-pass filtered and min-max normalised to [0, 0.2] (its ``*_0_255.npy``
    files hold values 0..51); building one needs a trained clean model, so this keeps the
    filtering and the scaling but starts from seeded noise. Only spatial frequencies of at
    most ``cutoff`` cycles per image survive.
    """
    noise = np.random.default_rng(seed).standard_normal(shape)
    spectrum = np.fft.fft2(noise, axes=(0, 1))
    fy = np.abs(np.fft.fftfreq(shape[0]) * shape[0])
    fx = np.abs(np.fft.fftfreq(shape[1]) * shape[1])
    keep = (fy[:, None] <= cutoff) & (fx[None, :] <= cutoff)
    smooth = np.real(np.fft.ifft2(spectrum * keep.reshape(keep.shape + (1,) * (len(shape) - 2)), axes=(0, 1)))
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    return (smooth * amplitude).astype(np.float32)


def lf(images: np.ndarray, pattern: Optional[np.ndarray] = None) -> np.ndarray:
    """x + pattern, clipped (BackdoorBench's ``SimpleAdditiveTrigger``)."""
    if pattern is None:
        pattern = lf_pattern(_pattern_shape(images))
    return _to_uint8(images.astype(np.float32) + pattern)


# ---- WaNet --------------------------------------------------------------------------------------------------------
def wanet_grid(size: int, k: int = 4, s: float = 0.5, grid_rescale: float = 1.0, seed: int = PATTERN_SEED) -> torch.Tensor:
    """WaNet's warping grid (Nguyen & Tran, 2021), shape (1, size, size, 2), in [-1, 1].

    BackdoorBench's defaults: a random (2, k, k) field with k=4, scaled to mean |.| = 1,
    bicubically upsampled to the image size, added to the identity grid with strength
    s=0.5 (divided by the image size), times grid_rescale=1, clamped to [-1, 1].
    """
    gen = torch.Generator().manual_seed(seed)
    ins = torch.rand(1, 2, k, k, generator=gen) * 2 - 1
    ins = ins / ins.abs().mean()
    noise_grid = F.interpolate(ins, size=size, mode="bicubic", align_corners=True).permute(0, 2, 3, 1)
    line = torch.linspace(-1, 1, steps=size)
    rows, cols = torch.meshgrid(line, line, indexing="ij")
    identity_grid = torch.stack((cols, rows), dim=2)[None]  # grid_sample wants (x, y) = (column, row)
    return torch.clamp((identity_grid + s * noise_grid / size) * grid_rescale, -1, 1)


def _warp(images: np.ndarray, grids: torch.Tensor) -> np.ndarray:
    x = torch.from_numpy(images.astype(np.float32))
    x = x[:, None] if images.ndim == 3 else x.permute(0, 3, 1, 2)  # -> NCHW
    out = F.grid_sample(x, grids.expand(x.shape[0], -1, -1, -1), align_corners=True)
    out = out[:, 0] if images.ndim == 3 else out.permute(0, 2, 3, 1)
    return _to_uint8(out.numpy())


def wanet(images: np.ndarray, grid: Optional[torch.Tensor] = None) -> np.ndarray:
    """Warp every image with the fixed WaNet grid (the backdoor trigger)."""
    if grid is None:
        grid = wanet_grid(images.shape[1])
    return _warp(images, grid)


def wanet_noise(images: np.ndarray, grid: Optional[torch.Tensor] = None, seed: int = 1) -> np.ndarray:
    """WaNet's noise mode ("cross" samples): the trigger grid plus per-pixel random offsets
    of up to one pixel's worth (uniform in [-1, 1] / size), clamped; these keep their true
    label so that the model learns the exact warp, not any warp.
    """
    size = images.shape[1]
    if grid is None:
        grid = wanet_grid(size)
    gen = torch.Generator().manual_seed(seed)
    jitter = (torch.rand(images.shape[0], size, size, 2, generator=gen) * 2 - 1) / size
    return _warp(images, torch.clamp(grid + jitter, -1, 1))
