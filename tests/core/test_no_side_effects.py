"""Building and running an Unlearner leaves the caller's model_ref exactly as it was; the
purified model gets its training mode back. (Process-wide settings: tests/core/test_runtime.py.)"""

import copy

import pytest
import torch

from sau_plugin import NonFiniteLossError, SAUConfig, Unlearner
from tests.helpers.synthetic import MEAN, STD, make, normalize, small_cnn


def _snapshot(module: torch.nn.Module) -> dict:
    return {
        "state": {k: v.clone() for k, v in module.state_dict().items()},
        "ptrs": [p.data_ptr() for p in module.parameters()],
        "strides": [p.stride() for p in module.parameters()],
        "contiguous": [p.is_contiguous() for p in module.parameters()],
        "requires_grad": [p.requires_grad for p in module.parameters()],
        "training": [m.training for m in module.modules()],
    }


def _same(a: dict, b: dict) -> None:
    assert a["state"].keys() == b["state"].keys()
    assert all(torch.equal(a["state"][k], b["state"][k]) for k in a["state"])
    for key in ("ptrs", "strides", "contiguous", "requires_grad", "training"):
        assert a[key] == b[key], key


def _cfg(**kw):
    return SAUConfig(device="cpu", amp=False, n_rounds=1, batch_size=16, lr=1e-2, **kw)


def test_the_callers_model_ref_is_left_exactly_as_it_was():
    torch.manual_seed(0)
    model_ref = small_cnn().train()  # a notebook user's model: train mode, contiguous, with gradients
    model_ref[0].eval()  # a mixed mode too
    before = _snapshot(model_ref)
    assert any(len(s) == 4 for s in before["strides"])  # there are 4-d weights whose format could change
    x, y = make(32, 3)
    u = Unlearner(copy.deepcopy(model_ref), model_ref, _cfg(), mean=MEAN, std=STD)
    u.fit(normalize(x), y)
    _same(before, _snapshot(model_ref))
    assert u.model_ref is not model_ref  # the loop's own frozen copy
    assert not u.model_ref.training and all(not p.requires_grad for p in u.model_ref.parameters())
    assert u.model_ref[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_copy_ref_false_freezes_the_given_module_in_place():
    torch.manual_seed(0)
    model_ref = small_cnn().train()
    u = Unlearner(copy.deepcopy(model_ref), model_ref, _cfg(), mean=MEAN, std=STD, copy_ref=False)
    assert u.model_ref is model_ref and not model_ref.training
    assert all(not p.requires_grad for p in model_ref.parameters())


def test_fit_gives_the_purified_model_its_training_mode_back():
    torch.manual_seed(0)
    model = small_cnn().train()
    model[1].eval()
    modes = [m.training for m in model.modules()]
    x, y = make(32, 3)
    u = Unlearner(model, copy.deepcopy(model), _cfg(train_mode=True), mean=MEAN, std=STD)
    u.fit(normalize(x), y)
    assert [m.training for m in model.modules()] == modes
    nan = normalize(x).clone()
    nan[0] = float("nan")
    with pytest.raises(NonFiniteLossError):
        u.fit(nan, y, epochs=2)  # a failing fit restores the mode too
    assert [m.training for m in model.modules()] == modes


def test_the_core_reads_only_the_methods_hyperparameters():
    from sau_plugin import SAUConfig, Unlearner
    from sau_plugin.config import MethodConfig

    model, ref = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)), torch.nn.Linear(4, 3)
    ref = torch.nn.Sequential(torch.nn.Flatten(), ref)
    full = SAUConfig(device="cpu", record_dir="/nowhere", n_rounds=1, lr=0.5)
    u = Unlearner(model, ref, full)
    assert isinstance(u.cfg, MethodConfig) and u.cfg == full.method()
    assert not hasattr(u.cfg, "device") and not hasattr(u.cfg, "record_dir")
    assert Unlearner(model, ref, full.method()).cfg == full.method()  # a MethodConfig is taken as it is
