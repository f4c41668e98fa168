"""The plugin's models have exactly BackdoorBench's state_dict keys and shapes (reference lists
in tests/data/state_dict_keys, dumped from BackdoorBench's own model builders)."""

import contextlib
from pathlib import Path

import pytest
import torch

from sau_plugin.models import create_model

KEYS = Path(__file__).resolve().parents[1] / "data" / "state_dict_keys"


def reference(name: str):
    rows = []
    for line in (KEYS / f"{name}_num_classes10.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            key, shape, dtype = line.split("\t")
            rows.append((key, tuple(int(v) for v in shape.strip("()").split(",") if v.strip()), dtype))
    return rows


@pytest.mark.parametrize("name", ["preactresnet18", "vgg19", "vgg19_bn", "resnet18"])
def test_state_dict_keys_and_shapes_match_backdoorbench(name):
    # shapes without allocating VGG's 140M parameters where torch can (a device context, torch >= 2.0)
    meta = torch.device("meta")
    with meta if hasattr(meta, "__enter__") else contextlib.nullcontext():
        model = create_model(name, 10)
    ours = [(k, tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in model.state_dict().items()]
    assert ours == reference(name)  # same keys, same order, same shapes and dtypes
