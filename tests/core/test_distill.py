"""The opt-in distillation term L_kd (``lmd_kd``) on hand-built logits, and its place in eq. 13's clean term."""

import copy
import math

import pytest
import torch
import torch.nn as nn

from sau_plugin import ConfigError, SAUConfig, Unlearner
from sau_plugin.core import clean_loss, distillation_loss


def test_value_on_hand_built_logits():
    # T = 1: teacher p = (3/4, 1/4), student q = (1/2, 1/2): KL = 3/4 ln(3/2) + 1/4 ln(1/2)
    student, teacher = torch.zeros(1, 2, dtype=torch.float64), torch.tensor([[math.log(3.0), 0.0]], dtype=torch.float64)
    assert distillation_loss(student, teacher, 1.0).item() == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5))
    # T = 2: the teacher's logits halve (p = (sqrt3, 1) / (sqrt3 + 1)) and the KL is scaled by T^2 = 4
    p = torch.tensor([math.sqrt(3.0), 1.0], dtype=torch.float64) / (math.sqrt(3.0) + 1)
    expected = 4 * float((p * (p / 0.5).log()).sum())
    assert distillation_loss(student, teacher, 2.0).item() == pytest.approx(expected)
    # the batch mean: a second, agreeing sample halves it
    both = distillation_loss(torch.cat([student, teacher]), torch.cat([teacher, teacher]), 2.0)
    assert both.item() == pytest.approx(expected / 2)


def test_zero_with_zero_gradient_when_student_agrees():
    teacher = torch.tensor([[2.0, -1.0, 0.5]], dtype=torch.float64)
    student = (teacher + 7.0).requires_grad_()  # a shift of every logit leaves the softmax unchanged
    loss = distillation_loss(student, teacher, 3.0)
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    assert torch.allclose(student.grad, torch.zeros_like(student.grad), atol=1e-12)


def test_gradient_moves_the_student_towards_the_teacher_and_never_the_teacher():
    teacher = torch.tensor([[3.0, 0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    student = torch.tensor([[0.0, 2.0, 0.0]], dtype=torch.float64, requires_grad=True)
    t = 2.0
    distillation_loss(student, teacher, t).backward()
    # d/dz of T^2 KL(p || softmax(z / T)) = T (softmax(z / T) - p)
    p, q = torch.softmax(teacher.detach() / t, 1), torch.softmax(student.detach() / t, 1)
    assert torch.allclose(student.grad, t * (q - p))
    assert student.grad[0, 0] < 0 < student.grad[0, 1]  # descent raises the teacher's class, lowers the student's
    assert teacher.grad is None  # the teacher is a fixed target
    # one small descent step lowers the loss
    with torch.no_grad():
        moved = student - 0.1 * student.grad
    assert distillation_loss(moved, teacher.detach(), t) < distillation_loss(student.detach(), teacher.detach(), t)


def test_clean_term_adds_lmd_kd_times_l_kd_and_is_unchanged_when_off():
    logits, teacher = torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([[0.0, 1.0], [0.5, 0.0]])
    labels = torch.tensor([0, 1])
    off = clean_loss(logits, labels, SAUConfig(lmd_1=0.7), teacher)
    assert set(off) == {"loss_cl", "loss"} and torch.equal(off["loss"], 0.7 * off["loss_cl"])
    on = clean_loss(logits, labels, SAUConfig(lmd_1=0.7, lmd_kd=0.5, kd_temperature=3.0), teacher)
    assert torch.equal(on["loss_kd"], distillation_loss(logits, teacher, 3.0))
    assert on["loss"].item() == pytest.approx(0.7 * on["loss_cl"].item() + 0.5 * on["loss_kd"].item())
    with pytest.raises(ConfigError, match="teacher_logits"):
        clean_loss(logits, labels, SAUConfig(lmd_kd=0.5))


def _tiny_run(outer_pass, **changes):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 3)).double().eval()
    with torch.no_grad():  # h_bd confident and far from uniform, so that its soft labels say something
        model[-1].weight.mul_(5.0)
        model[-1].bias.copy_(torch.tensor([2.0, -1.0, 0.0], dtype=torch.float64))
    ref = copy.deepcopy(model)
    with torch.no_grad():  # h starts away from h_bd, so that L_kd has a gradient
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x, y = torch.randn(8, 1, 6, 6, dtype=torch.float64), torch.randint(0, 3, (8,))
    cfg = SAUConfig(device="cpu", n_rounds=2, batch_size=4, lr=1e-2, lr_scheduler="none", **changes)
    start = distillation_loss(model(x), ref(x), cfg.kd_temperature).item()
    u = Unlearner(model, ref, cfg, outer_pass=outer_pass)
    u.fit(x, y)
    u.kd_start_end = (start, distillation_loss(u.model(x), ref(x), cfg.kd_temperature).item())
    return u


def test_both_outer_passes_add_the_same_l_kd_and_it_changes_the_run():
    split, joint = _tiny_run("split", lmd_kd=2.0), _tiny_run("joint", lmd_kd=2.0)
    assert split.history[-1]["train_loss_kd"] == pytest.approx(joint.history[-1]["train_loss_kd"], rel=1e-9)
    for a, b in zip(split.model.parameters(), joint.model.parameters()):
        assert torch.allclose(a, b, atol=1e-10)
    plain = _tiny_run("split")
    assert "train_loss_kd" not in plain.history[-1]
    assert not all(torch.allclose(a, b) for a, b in zip(split.model.parameters(), plain.model.parameters()))


@pytest.mark.parametrize("outer_pass, variant", [("joint", "ft"), ("joint", "sau"), ("split", "sau")])
def test_l_kd_alone_pulls_h_towards_h_bd(outer_pass, variant):
    start, end = _tiny_run(outer_pass, variant=variant, lmd_1=0.0, lmd_3=0.0, lmd_kd=1.0).kd_start_end
    assert end < 0.5 * start, (start, end)
