"""Standalone dataset readers (each on-disk format, BackdoorBench's sample order), the test
transform without torchvision, and the clean-subset choice."""

import os
import pickle
import random

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import bb
from sau_plugin.backdoorbench.datasets import load_split
from sau_plugin.run.inputs import choose_clean_indices
from sau_plugin.backdoorbench.transforms import normalization, pil_to_uint8, stack_images
from sau_plugin.core import PixelSpace
from sau_plugin.config import SAUConfig
from sau_plugin.errors import ConfigError, DatasetError


def test_cifar10_reads_batches_in_order(tmp_path):
    bb.write_cifar10(tmp_path, per_batch=3, n_test=4)
    train, test = load_split("cifar10", tmp_path, True), load_split("cifar10", tmp_path, False)
    assert len(train) == 15 and len(test) == 4
    raw = pickle.loads((tmp_path / "cifar-10-batches-py" / "data_batch_2").read_bytes())
    img = train.image(3)  # first image of batch 2
    assert img.mode == "RGB" and img.size == (32, 32)
    assert np.array_equal(np.asarray(img), raw["data"][0].reshape(3, 32, 32).transpose(1, 2, 0))
    assert train.labels[3:6].tolist() == raw["labels"]


def test_cifar100_uses_fine_labels(tmp_path):
    bb.write_cifar100(tmp_path, n_train=5, n_test=3)
    raw = pickle.loads((tmp_path / "cifar-100-python" / "test").read_bytes())
    assert load_split("cifar100", tmp_path, False).labels.tolist() == raw["fine_labels"]


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_plain_and_gz(tmp_path, gz):
    bb.write_mnist(tmp_path, n_train=7, n_test=5, gz=gz)
    train = load_split("mnist", tmp_path, True)
    assert len(train) == 7 and train.image(0).mode == "L" and train.image(0).size == (28, 28)
    assert len(load_split("mnist", tmp_path, False)) == 5


def test_gtsrb_reads_43_class_csvs_and_the_test_csv(tmp_path):
    bb.write_gtsrb(tmp_path, per_class=2, n_test=5)
    train, test = load_split("gtsrb", tmp_path, True), load_split("gtsrb", tmp_path, False)
    assert train.labels.tolist() == [c for c in range(43) for _ in range(2)]
    assert len(test) == 5 and train.image(0).size == (5, 6) and train.image(0).mode == "RGB"
    (tmp_path / "Train" / "00042" / "GT-00042.csv").unlink()
    with pytest.raises(DatasetError, match="GT-00042.csv"):
        load_split("gtsrb", tmp_path, True)


def test_tiny_val_layouts_agree(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    bb.write_tiny(a, val_layout="annotations")
    bb.write_tiny(b, val_layout="folders")
    va, vb = load_split("tiny", a, False), load_split("tiny", b, False)
    assert va.labels.tolist() == vb.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4  # sorted wnids, sorted files
    assert np.array_equal(np.asarray(va.image(5)), np.asarray(vb.image(5)))
    train = load_split("tiny", a, True)
    assert train.labels.tolist() == [0] * 6 + [1] * 6 + [2] * 6 and train.image(0).mode == "RGB"


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "mnist", "gtsrb", "tiny"])
def test_missing_dataset_names_the_path_it_looked_at(tmp_path, name):
    with pytest.raises(DatasetError, match=str(tmp_path)):
        load_split(name, tmp_path, True)


def test_a_dataset_pickle_with_a_code_global_is_refused(tmp_path):
    bb.write_cifar10(tmp_path, per_batch=2, n_test=2)
    marker = tmp_path / "pwned"

    class RunsCode:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({"data": RunsCode()}))
    with pytest.raises(DatasetError, match="system"):
        load_split("cifar10", tmp_path, False)
    assert not marker.exists()


def test_transform_is_bilinear_resize_then_to_tensor_then_normalize():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    x = pil_to_uint8(img, (8, 8), 3)
    assert x.shape == (3, 8, 8) and x.dtype == torch.uint8
    assert np.array_equal(x.permute(1, 2, 0).numpy(), np.asarray(img.resize((8, 8), Image.BILINEAR)))
    assert torch.equal(pil_to_uint8(img, (32, 32), 3).permute(1, 2, 0), torch.from_numpy(np.array(img)))
    assert pil_to_uint8(img, (8, 8), 1).shape == (1, 8, 8)  # mode follows img_size's channels
    mean, std = normalization("cifar10")
    batch = stack_images([img, img], (8, 8), 3)
    expected = (batch.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.equal(PixelSpace(mean, std).normalize_uint8(batch), expected)
    with pytest.raises(ConfigError, match="no normalisation"):
        normalization("svhn")


def test_clean_subset_is_backdoorbenchs_random_sample(tmp_path):
    cfg = SAUConfig(ratio=0.05, random_seed=3)
    random.seed(3)
    assert choose_clean_indices(1000, cfg).tolist() == random.sample(range(1000), 50)
    with pytest.raises(DatasetError, match="selects no sample"):
        choose_clean_indices(10, cfg)
    index = tmp_path / "idx.txt"
    index.write_text("4\n2\n9\n")
    assert choose_clean_indices(10, cfg.replace(index=str(index))).tolist() == [4, 2, 9]
    index.write_text("4\n10\n")
    with pytest.raises(DatasetError, match=r"outside \[0, 10\)"):
        choose_clean_indices(10, cfg.replace(index=str(index)))
    index.write_text("a\n")
    with pytest.raises(DatasetError, match="integers"):
        choose_clean_indices(10, cfg.replace(index=str(index)))
    with pytest.raises(DatasetError, match="not found"):
        choose_clean_indices(10, cfg.replace(index=str(tmp_path / "none.txt")))
