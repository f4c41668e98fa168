"""Trigger functions, label maps and poisoning of the offline attack generator, on small inputs."""

import numpy as np
import pytest
import torch

from sau_plugin.demo import triggers
from sau_plugin.demo.attack import random_crop
from sau_plugin.demo.poison import AttackSettings, poison_indices, poison_test, poison_train
from sau_plugin.demo.data import Split
from sau_plugin.errors import ConfigError


@pytest.fixture
def images():
    return np.random.default_rng(1).integers(0, 256, size=(6, 28, 28), dtype=np.uint8)


def test_badnet_stamps_a_white_3x3_square_bottom_right(images):
    before = images.copy()
    out = triggers.badnet(images)
    assert out.shape == images.shape and out.dtype == np.uint8
    assert (out[:, -3:, -3:] == 255).all()
    mask = np.ones((28, 28), bool)
    mask[-3:, -3:] = False
    assert (out[:, mask] == images[:, mask]).all()
    assert (images == before).all()  # input untouched


def test_badnet_on_rgb_hwc():
    x = np.zeros((2, 8, 8, 3), np.uint8)
    out = triggers.badnet(x)
    assert (out[:, -3:, -3:, :] == 255).all() and out.sum() == 2 * 9 * 3 * 255


def test_blended_mixes_a_fixed_pattern_with_alpha(images):
    pattern = triggers.blend_pattern((28, 28))
    assert pattern.dtype == np.uint8 and pattern.shape == (28, 28)
    assert (pattern == triggers.blend_pattern((28, 28))).all()  # deterministic
    assert (pattern != triggers.blend_pattern((28, 28), seed=1)).any()
    out = triggers.blended(images)
    expected = np.rint(0.8 * images.astype(np.float64) + 0.2 * pattern)
    assert out.dtype == np.uint8 and out.shape == images.shape
    assert np.abs(out.astype(int) - expected).max() <= 1  # float32 rounding at most one level
    # alpha 0 leaves the image, alpha 1 gives the pattern
    assert (triggers.blended(images, pattern, alpha=0.0) == images).all()
    assert (triggers.blended(images, pattern, alpha=1.0) == pattern).all()


def test_sig_adds_a_horizontal_sinusoid():
    pattern = triggers.sig_pattern((28, 28))
    j = np.arange(28)
    assert np.allclose(pattern[0], 40 * np.sin(2 * np.pi * j * 6 / 28), atol=1e-4)
    assert (pattern == pattern[0]).all()  # constant down each column
    gray = np.full((3, 28, 28), 128, np.uint8)
    out = triggers.sig(gray)
    assert out.dtype == np.uint8
    assert (out == np.rint(128 + pattern)).all()
    # clipping at both ends
    assert triggers.sig(np.zeros((1, 28, 28), np.uint8)).min() == 0
    assert triggers.sig(np.full((1, 28, 28), 250, np.uint8)).max() == 255


def test_lf_pattern_is_smooth_non_negative_and_scaled_like_backdoorbench():
    pattern = triggers.lf_pattern((28, 28))
    assert pattern.shape == (28, 28) and pattern.dtype == np.float32
    assert pattern.min() == pytest.approx(0, abs=1e-4) and pattern.max() == pytest.approx(51, abs=1e-3)
    spectrum = np.abs(np.fft.fft2(pattern - pattern.mean()))
    f = np.abs(np.fft.fftfreq(28) * 28)
    high = (f[:, None] > 3) | (f[None, :] > 3)
    assert spectrum[high].max() < 1e-3 * spectrum.max()  # only frequencies up to 3 cycles per image
    assert (pattern == triggers.lf_pattern((28, 28))).all()
    out = triggers.lf(np.zeros((2, 28, 28), np.uint8))
    assert out.dtype == np.uint8 and out.max() == 51
    assert (triggers.lf(np.full((1, 28, 28), 255, np.uint8)) == 255).all()


def test_wanet_grid_is_a_small_fixed_warp_of_the_identity():
    grid = triggers.wanet_grid(28)
    assert grid.shape == (1, 28, 28, 2) and grid.abs().max() <= 1
    assert torch.equal(grid, triggers.wanet_grid(28))
    identity = triggers.wanet_grid(28, s=0.0)
    assert identity[0, 0, 0].tolist() == [-1, -1] and identity[0, 0, -1].tolist() == [1, -1]  # (x, y) order
    offset = (grid - identity).abs()
    assert 0 < offset.max() < 0.5 * 4 / 28  # s * |noise| / size, |noise| well under 4
    # the identity grid reproduces the image exactly
    x = np.random.default_rng(0).integers(0, 256, size=(2, 28, 28), dtype=np.uint8)
    assert (triggers.wanet(x, identity) == x).all()


def test_wanet_and_its_noise_mode_change_images_a_little(images):
    warped, noisy = triggers.wanet(images), triggers.wanet_noise(images)
    for out in (warped, noisy):
        assert out.shape == images.shape and out.dtype == np.uint8
    diff = np.abs(warped.astype(int) - images).mean()
    assert 0 < diff < 64  # random-noise images move a lot per pixel shift; digits far less
    assert (noisy != warped).any()
    assert (triggers.wanet_noise(images, seed=3) == triggers.wanet_noise(images, seed=3)).all()


def test_label_maps():
    y = np.arange(10)
    assert (triggers.all_to_one(y, 0) == 0).all()
    assert triggers.all_to_all(y, 10).tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]


# ---- poisoning ------------------------------------------------------------------------------------------------
def _split(n_per_class=20, size=28):
    labels = np.repeat(np.arange(10), n_per_class)
    imgs = np.random.default_rng(0).integers(0, 200, size=(len(labels), size, size), dtype=np.uint8)
    return Split(imgs, labels)


def test_poison_indices_counts_and_clean_label():
    labels = np.repeat(np.arange(10), 20)
    rng = np.random.default_rng(0)
    idx = poison_indices(labels, 0.1, rng)
    assert len(idx) == 20 and len(set(idx.tolist())) == 20
    cl = poison_indices(labels, 0.05, rng, clean_label=True, target=3)
    assert len(cl) == 10 and (labels[cl] == 3).all()
    capped = poison_indices(labels, 0.2, rng, clean_label=True, target=3)  # 40 wanted, 20 in class 3
    assert sorted(capped.tolist()) == np.flatnonzero(labels == 3).tolist()


@pytest.mark.parametrize("attack", ["badnet", "blended", "lf"])
def test_poison_train_all_to_one(attack):
    train = _split()
    images, labels, idx, split = poison_train(train, AttackSettings(attack=attack, pratio=0.1, target=2))
    assert len(idx) == 20 and (labels[idx] == 2).all()
    rest = np.setdiff1d(np.arange(200), idx)
    assert (labels[rest] == train.labels[rest]).all() and (images[rest] == train.images[rest]).all()
    assert (images[idx] != train.images[idx]).any()
    assert split.split_size == 200 and list(split.indices) == idx.tolist()
    assert split.bd_labels == [2] * 20 and split.original_labels == train.labels[idx].tolist()
    assert split.images[0].mode == "L" and split.images[0].size == (28, 28)


def test_sig_is_clean_label():
    train = _split()
    images, labels, idx, split = poison_train(train, AttackSettings(attack="sig", pratio=0.05, target=0))
    assert len(idx) == 10 and (train.labels[idx] == 0).all()
    assert (labels == train.labels).all()  # no label is changed
    assert split.bd_labels == split.original_labels == [0] * 10
    assert (images[idx] != train.images[idx]).any()


def test_all_to_all_shifts_labels():
    train = _split()
    _, labels, idx, _ = poison_train(train, AttackSettings(attack="badnet_all2all", pratio=0.1))
    assert (labels[idx] == (train.labels[idx] + 1) % 10).all()
    test = poison_test(train, AttackSettings(attack="badnet_all2all"))
    assert len(test.indices) == 200 and test.bd_labels == ((train.labels + 1) % 10).tolist()


def test_wanet_noise_mode_samples_keep_their_labels():
    train = _split()
    images, labels, idx, split = poison_train(train, AttackSettings(attack="wanet", pratio=0.1, cross_ratio=2))
    assert len(idx) == 20 and (labels[idx] == 0).all()
    cross = np.setdiff1d(split.indices, idx)
    assert len(cross) == 40 and (labels[cross] == train.labels[cross]).all()
    assert (images[cross] != train.images[cross]).any()
    assert len(split.indices) == 60  # BackdoorBench's bd_train records both kinds


def test_poison_test_excludes_the_target_class():
    test = _split(5)
    split = poison_test(test, AttackSettings(attack="blended", target=4))
    assert len(split.indices) == 45 and 4 not in split.original_labels and set(split.bd_labels) == {4}
    assert split.split_size == 50
    np.testing.assert_array_equal(np.asarray(split.images[0]), triggers.blended(test.images[split.indices[:1]])[0])


def test_settings_validation():
    with pytest.raises(ConfigError, match="unknown attack"):
        AttackSettings(attack="nope")
    with pytest.raises(ConfigError, match="pratio"):
        AttackSettings(pratio=1.5)
    with pytest.raises(ConfigError, match="target"):
        AttackSettings(target=10)


def test_random_crop_shifts_each_sample_within_the_black_padding():
    x = torch.randn(8, 1, 6, 6)
    gen = torch.Generator().manual_seed(0)
    assert random_crop(x, 0, gen) is x
    out = random_crop(x, 2, gen)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), value=-1.0)  # black after Normalize(0.5, 0.5)
    for i in range(8):  # every crop is a 6x6 window of the padded image
        windows = padded[i, 0].unfold(0, 6, 1).unfold(1, 6, 1).reshape(-1, 6, 6)
        assert any(torch.equal(out[i, 0], w) for w in windows)


def test_random_crop_draws_one_offset_pair_per_sample_for_every_channel():
    x = torch.randn(5, 3, 7, 9)
    out = random_crop(x, 3, torch.Generator().manual_seed(4))
    dy, dx = torch.randint(0, 7, (2, 5), generator=torch.Generator().manual_seed(4)).tolist()
    padded = torch.nn.functional.pad(x, (3, 3, 3, 3), value=-1.0)
    for i in range(5):  # the same window of the padded image in all channels
        assert torch.equal(out[i], padded[i, :, dy[i]:dy[i] + 7, dx[i]:dx[i] + 9])


def test_per_attack_defaults_resolve_and_are_recorded():
    sig = AttackSettings(attack="sig")
    assert sig.poison_ratio == 0.09 and sig.to_dict()["pratio"] == 0.09
    assert AttackSettings(attack="sig", pratio=0.2).poison_ratio == 0.2
    assert AttackSettings(attack="badnet_all2all").to_dict()["epochs"] == 16
    assert AttackSettings(attack="badnet").to_dict() == AttackSettings(attack="badnet", pratio=0.1, epochs=8).to_dict()
