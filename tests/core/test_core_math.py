"""Unit tests of the SAU math on hand-built inputs (perturbation sets, masks, losses, DER)."""

import logging
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from sau_plugin.core import (PixelSpace, SharedPGD, init_perturbation, js_divergence, project, sar_loss)
from sau_plugin.core.pgd import shared_masks, shared_objective
from sau_plugin.metrics import der


def _norms(pert, norm):
    flat = pert.flatten(1)
    return {"L_inf": flat.abs().amax(1), "L2": flat.norm(dim=1), "L1": flat.abs().sum(1)}[norm]


@pytest.mark.parametrize("norm, bound", [("L_inf", 0.2), ("L2", 5.0), ("L1", 300.0), ("L2", 0.5), ("L1", 2.0)])
def test_projection_puts_every_sample_inside_its_ball(norm, bound):
    pert = torch.randn(16, 3, 32, 32) * 10
    out = project(pert, norm, bound)
    assert (_norms(out, norm) <= bound * (1 + 1e-5)).all()
    if norm != "L_inf":  # rescaling: direction kept, sample lands on the sphere
        assert torch.allclose(_norms(out, norm), torch.full((16,), bound), rtol=1e-5)
        cos = F.cosine_similarity(out.flatten(1), pert.flatten(1))
        assert torch.allclose(cos, torch.ones(16), atol=1e-5)


@pytest.mark.parametrize("norm, bound", [("L_inf", 0.2), ("L2", 5.0), ("L1", 300.0)])
def test_projection_leaves_points_inside_unchanged(norm, bound):
    pert = torch.randn(8, 3, 16, 16)
    inside = pert / _norms(pert, norm).view(-1, 1, 1, 1) * bound * torch.rand(8).view(-1, 1, 1, 1)
    assert torch.equal(project(inside, norm, bound), inside)


def test_projection_mixes_inside_and_outside_samples_per_sample():
    pert = torch.stack([torch.full((1, 2, 2), 0.1), torch.full((1, 2, 2), 10.0)])  # L2 norms 0.2 and 20
    out = project(pert, "L2", 1.0)
    assert torch.equal(out[0], pert[0])
    assert math.isclose(float(out[1].norm()), 1.0, rel_tol=1e-6)


@pytest.mark.parametrize("init, expected", [("max", 0.2), ("min", -0.2), ("zero", 0.0)])
def test_init_constants(init, expected):
    p = init_perturbation(torch.zeros(2, 3, 4, 4), init, "L_inf", 0.2)
    assert torch.all(p == expected)


def test_init_random_is_seeded_and_projected():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = init_perturbation(torch.zeros(2, 3, 4, 4), "random", "L_inf", 0.2, g1)
    b = init_perturbation(torch.zeros(2, 3, 4, 4), "random", "L_inf", 0.2, g2)
    assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 0.2


def test_init_max_under_l2_is_the_rescaled_constant():
    p = init_perturbation(torch.zeros(2, 1, 10, 10), "max", "L2", 1.0)
    assert torch.allclose(p, torch.full_like(p, 0.1))  # 100 pixels of 0.1 -> L2 norm 1


def test_pixel_space_round_trip_and_perturbation():
    space = PixelSpace((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261))
    x01 = torch.rand(2, 3, 4, 4)
    x = space.normalize(x01)
    assert torch.allclose(space.denormalize(x), x01, atol=1e-6)
    eps = torch.full_like(x01, 0.2)
    assert torch.allclose(space.perturb(space.denormalize(x), eps), space.normalize(x01 + 0.2), atol=1e-6)


def test_shared_masks_on_hand_built_predictions():
    clean = torch.tensor([0, 0, 0, 0, 1])
    clean_ref = torch.tensor([0, 0, 0, 0, 2])
    pred = torch.tensor([0, 3, 3, 3, 4])
    pred_ref = torch.tensor([3, 0, 3, 4, 4])
    fooled, fooled_ref, shared = shared_masks(pred, pred_ref, clean, clean_ref)
    assert fooled.tolist() == [False, True, True, True, True]
    assert fooled_ref.tolist() == [True, False, True, True, True]
    # shared: both fooled and same class
    assert shared.tolist() == [False, False, True, False, True]


def test_shared_objective_masks_each_term():
    # Sample 0: neither model fooled, not shared -> all terms. Sample 1: both fooled to the
    # same class -> shared, no adversarial CE and no JS term.
    logits = torch.tensor([[4.0, 0.0, 0.0], [0.0, 0.0, 5.0]])
    logits_ref = torch.tensor([[3.0, 1.0, 0.0], [0.0, 1.0, 6.0]])
    labels = torch.tensor([0, 0])
    clean = torch.tensor([0, 0])
    obj = shared_objective(logits, logits_ref, labels, clean, clean, beta_1=0.01, beta_2=1.0)
    loss, shared = obj.loss, obj.shared
    assert shared.tolist() == [False, True] and obj.fooled.tolist() == obj.fooled_ref.tolist() == [False, True]
    ce0 = F.cross_entropy(logits[:1], labels[:1]) + F.cross_entropy(logits_ref[:1], labels[:1])
    expected = 0.01 * (-ce0 / 4) + js_divergence(logits[:1], logits_ref[:1]).sum() / 2
    assert torch.allclose(loss, expected)


def test_js_is_zero_for_identical_outputs_and_positive_otherwise():
    z = torch.randn(5, 10)
    assert torch.allclose(js_divergence(z, z), torch.zeros(5), atol=1e-7)
    assert (js_divergence(z, z.flip(1)) > 0).all()
    # bounded by log 2
    far = torch.tensor([[100.0, -100.0]]), torch.tensor([[-100.0, 100.0]])
    assert float(js_divergence(*far)) <= math.log(2) + 1e-6


def test_sar_loss_equals_the_formula_on_a_hand_computed_example():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.5, 0.5 - 1e-9, 1e-9]]))
    y_tilde = torch.tensor([0, 2, 1])
    selected = torch.tensor([True, True, False])
    # per sample: (-log(1e-6 + min(1 - p, .999)) - log(1 + 1e-6 - max(p, .001))) / 2
    s0 = (-math.log(1e-6 + 0.3) - math.log(1 + 1e-6 - 0.7)) / 2
    s1 = (-math.log(1e-6 + 0.2) - math.log(1 + 1e-6 - 0.8)) / 2
    assert math.isclose(float(sar_loss(logits, y_tilde, selected)), s0 + s1, rel_tol=1e-5)
    # clamps: p_{y~} tiny -> 0.001 floor; rest capped at 0.999
    tiny = torch.log(torch.tensor([[0.9999, 0.0001]], dtype=torch.float64))
    expected = (-math.log(1e-6 + 0.999) - math.log(1 + 1e-6 - 0.001)) / 2
    assert math.isclose(float(sar_loss(tiny, torch.tensor([1]), torch.tensor([True]))), expected, rel_tol=1e-6)
    assert float(sar_loss(logits, y_tilde, torch.zeros(3, dtype=torch.bool))) == 0.0


def test_a_step_on_sar_lowers_the_probability_of_the_backdoor_prediction():
    logits = torch.tensor([[2.0, 0.5, 0.1], [0.3, 0.2, 1.5]], requires_grad=True)
    y_tilde = torch.tensor([0, 2])
    before = F.softmax(logits, 1).gather(1, y_tilde.view(-1, 1)).detach()
    opt = torch.optim.SGD([logits], lr=0.5)
    sar_loss(logits, y_tilde, torch.tensor([True, True])).backward()
    opt.step()
    after = F.softmax(logits, 1).gather(1, y_tilde.view(-1, 1)).detach()
    assert (after < before).all()


class _MeanPixel(nn.Module):
    """Predicts class 1 when the mean pixel (in [0,1] space) exceeds a threshold, else 0."""

    def __init__(self, threshold):
        super().__init__()
        self.threshold = threshold
        self.scale = nn.Parameter(torch.tensor(50.0))

    def forward(self, x):
        s = self.scale * (x.mean(dim=(1, 2, 3)) - self.threshold)
        return torch.stack([-s, s, torch.full_like(s, -100.0)], dim=1)


def test_shared_pgd_stops_early_when_every_sample_is_shared():
    x = torch.full((4, 1, 4, 4), 0.4)  # clean: class 0 for both; +0.2 flips both to class 1
    y = torch.zeros(4, dtype=torch.long)
    attack = SharedPGD(_MeanPixel(0.5), _MeanPixel(0.5), steps=5, bound=0.2, step_size=0.2, init="max")
    res = attack(x, y)
    assert res.steps == 1


def test_the_update_at_the_stopping_step_is_a_no_op():
    # Every sample shared: both masked terms are empty, so d loss / d eps is exactly zero and
    # the reference's last update (before its break) leaves eps as it was.
    x = torch.full((4, 1, 4, 4), 0.4, dtype=torch.float64)
    m = _MeanPixel(0.5).double()
    eps = torch.full_like(x, 0.2, requires_grad=True)
    logits = m(x + eps)
    clean = torch.zeros(4, dtype=torch.long)
    obj = shared_objective(logits, m(x + eps), clean, clean, clean, beta_1=0.01, beta_2=1.0)
    assert bool(obj.shared.all())
    (grad,) = torch.autograd.grad(obj.loss, eps)
    assert torch.equal(grad, torch.zeros_like(grad))
    res = SharedPGD(m, m, steps=5, bound=0.2, step_size=0.2, init="max")(x, clean)
    assert res.steps == 1 and torch.equal(res.pert, torch.full_like(x, 0.2))


def test_shared_pgd_runs_all_steps_when_not_shared_and_stays_in_the_ball():
    x = torch.full((4, 1, 4, 4), 0.4)
    y = torch.zeros(4, dtype=torch.long)
    unfoolable = _MeanPixel(5.0)  # never crosses its threshold
    res = SharedPGD(_MeanPixel(0.5), unfoolable, steps=5, bound=0.2, step_size=0.2)(x, y)
    assert res.steps == 5
    assert res.pert.abs().max() <= 0.2 + 1e-7
    assert not res.pert.requires_grad and not res.x_adv.requires_grad


def test_reg_norm_is_unconstrained_as_in_the_reference():
    pert = torch.randn(4, 3, 4, 4) * 10
    assert torch.equal(project(pert, "Reg", 0.2), pert)
    assert torch.all(init_perturbation(torch.zeros(2, 3, 4, 4), "max", "Reg", 0.2) == 0.2)
    x = torch.full((2, 1, 4, 4), 0.4, dtype=torch.float64)
    # two unfoolable models that agree: only the CE terms push, always upwards (float64: no underflow)
    res = SharedPGD(_MeanPixel(5.0).double(), _MeanPixel(5.0).double(), steps=3, bound=0.2, step_size=0.2, norm="Reg")(
        x, torch.zeros(2, dtype=torch.long))
    assert res.steps == 3 and torch.allclose(res.pert, torch.full_like(x, 0.8))  # 0.2 + 3 steps of 0.2, no clamp


def test_pgd_diagnostics_are_logged_at_debug_only(caplog, monkeypatch):
    import sau_plugin.core.pgd as pgd_mod

    x = torch.stack([torch.full((1, 4, 4), 0.4), torch.full((1, 4, 4), 0.1)])  # +0.2 fools both only on sample 0
    y = torch.zeros(2, dtype=torch.long)
    attack = SharedPGD(_MeanPixel(0.5), _MeanPixel(0.5), steps=2, bound=0.2, step_size=0.2, init="max")
    calls = []
    real = pgd_mod.pgd_diagnostics
    monkeypatch.setattr(pgd_mod, "pgd_diagnostics", lambda *a: calls.append(a) or real(*a))
    with caplog.at_level(logging.INFO, logger="sau_plugin.core.pgd"):
        attack(x, y)
    assert calls == [] and caplog.records == []  # the default path computes nothing for them
    with caplog.at_level(logging.DEBUG, logger="sau_plugin.core.pgd"):
        attack(x, y)
    (record,) = caplog.records
    assert record.levelno == logging.DEBUG
    msg = record.getMessage()
    assert "2 step(s), batch 2; fooled h 1, h_bd 1, both 1, shared 1;" in msg
    assert "eps norm (mean) L1 3.2000, L2 0.8000, Linf 0.2000" in msg  # 16 pixels of 0.2 per sample


def test_pgd_gradient_does_not_touch_parameters():
    m, r = _MeanPixel(0.5), _MeanPixel(5.0)
    SharedPGD(m, r, steps=3)(torch.full((2, 1, 4, 4), 0.4), torch.zeros(2, dtype=torch.long))
    assert m.scale.grad is None and r.scale.grad is None


@pytest.mark.parametrize(
    "before, after, expected",
    [
        ((91.32, 95.03), (89.31, 1.53), 95.74),  # BadNets
        ((93.47, 99.92), (90.96, 6.14), 95.63),  # Blended
        ((84.48, 98.27), (88.56, 1.67), 98.30),  # SIG (ACC went up: no penalty)
        ((91.25, 89.73), (91.26, 1.02), 94.36),  # WaNet
    ],
)
def test_der_reproduces_paper_table2_sau(before, after, expected):
    value = der(before[0] / 100, before[1] / 100, after[0] / 100, after[1] / 100)
    assert abs(value - expected) <= 0.02


def test_der_ignores_asr_increase_and_acc_gain():
    assert der(0.9, 0.1, 0.95, 0.5) == 50.0
