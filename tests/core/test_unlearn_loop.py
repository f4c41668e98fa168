"""The epoch loop: determinism, resume, variants, BatchNorm handling, schedules, failures."""

import copy
import math

import pytest
import torch

from sau_plugin import NonFiniteLossError, SAUConfig, Unlearner, unlearn
from sau_plugin.core import PGD, SARLoss, SharedPGD, cpu_supports_bf16
from tests.helpers.synthetic import MEAN, STD, make, normalize, small_cnn


def _data(n=48):
    x, y = make(n, 7)
    return normalize(x), y


def _cfg(**kw):
    base = dict(device="cpu", amp=False, n_rounds=2, batch_size=16, lr=1e-3)
    base.update(kw)
    return SAUConfig(**base)


def _pair(seed=0):
    torch.manual_seed(seed)
    m = small_cnn().eval()
    return m, copy.deepcopy(m)


def _run(cfg, epochs=None):
    m, r = _pair()
    u = Unlearner(m, r, cfg, mean=MEAN, std=STD)
    u.fit(*_data(), epochs=epochs)
    return u


def _same_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_fixed_seed_is_deterministic_on_cpu():
    a, b = _run(_cfg()), _run(_cfg())
    assert _same_state(a.model.state_dict(), b.model.state_dict())
    assert [r["train_loss"] for r in a.history] == [r["train_loss"] for r in b.history]
    c = _run(_cfg(random_seed=1))  # another seed shuffles differently
    assert not _same_state(a.model.state_dict(), c.model.state_dict())


def test_resume_from_state_dict_is_bitwise_identical():
    # random init exercises the generator state too; the stepped schedule, the scheduler state
    cfg = _cfg(n_rounds=4, pgd_init="random", lr_scheduler_stepping="epoch")
    straight = _run(cfg)
    first = _run(cfg, epochs=2)
    state = copy.deepcopy(first.state_dict())
    m, r = _pair()
    resumed = Unlearner(m, r, cfg, mean=MEAN, std=STD)
    resumed.load_state_dict(state)
    assert resumed.epoch == 2
    resumed.fit(*_data())
    assert _same_state(straight.model.state_dict(), resumed.model.state_dict())
    strip = lambda h: [{k: v for k, v in row.items() if not k.startswith("time_")} for row in h]
    assert strip(straight.history) == strip(resumed.history)


def test_history_and_callbacks():
    seen = []
    x, y = _data()
    m, r = _pair()
    res = unlearn(m, r, x, y, _cfg(n_rounds=3), mean=MEAN, std=STD,
                  evaluate=lambda model: {"test_acc": 0.5}, on_epoch_end=lambda u, row: seen.append(row["epoch"]))
    assert [row["epoch"] for row in res.history] == [0.0, 1.0, 2.0] and seen == [0.0, 1.0, 2.0]
    assert all(row["test_acc"] == 0.5 and "time_unlearn_s" in row and row["train_pgd_steps"] >= 1 for row in res.history)


def test_fixed_batchnorm_by_default_and_train_mode_lifts_it():
    fixed = _run(_cfg())
    m0, _ = _pair()
    bn_keys = [k for k in m0.state_dict() if "running_mean" in k]
    assert all(torch.equal(fixed.model.state_dict()[k], m0.state_dict()[k]) for k in bn_keys)
    trained = _run(_cfg(train_mode=True))
    assert any(not torch.equal(trained.model.state_dict()[k], m0.state_dict()[k]) for k in bn_keys)
    assert not trained.model.training  # back in eval mode after each step


def test_reference_model_is_frozen():
    u = _run(_cfg())
    m0, _ = _pair()
    assert _same_state(u.model_ref.state_dict(), m0.state_dict())
    assert all(not p.requires_grad for p in u.model_ref.parameters())


@pytest.mark.parametrize(
    "variant, attack_cls, has_sar, has_at",
    [("sau", SharedPGD, True, False), ("at", PGD, False, True), ("a+d", SharedPGD, False, True),
     ("c+b", PGD, True, False), ("ft", type(None), False, False)],
)
def test_variants_pick_their_inner_and_outer_problems(variant, attack_cls, has_sar, has_at):
    u = _run(_cfg(variant=variant, n_rounds=1))
    assert type(u.attack) is attack_cls
    row = u.history[0]
    assert ("train_loss_sar" in row) == has_sar
    assert ("train_loss_at" in row) == has_at
    assert ("train_pgd_steps" in row) == (variant != "ft")


def test_lr_is_constant_by_default_and_the_schedule_steps_only_when_asked():
    # The reference builds CosineAnnealingLR and never steps it: constant lr, whatever lr_scheduler says.
    for sched in ("CosineAnnealingLR", "StepLR", "MultiStepLR", "none"):
        u = _run(_cfg(n_rounds=2, lr_scheduler=sched))
        assert u.scheduler is None and u.optimizer.param_groups[0]["lr"] == 1e-3, sched
    cos = _run(_cfg(n_rounds=2, lr_scheduler_stepping="epoch"))  # cosine, T_max = n_rounds
    assert math.isclose(cos.optimizer.param_groups[0]["lr"], 0.0, abs_tol=1e-12)
    half = _run(_cfg(n_rounds=4, lr_scheduler_stepping="epoch"), epochs=2)
    assert math.isclose(half.optimizer.param_groups[0]["lr"], 0.5e-3, rel_tol=1e-9)
    step = _run(_cfg(n_rounds=2, lr_scheduler="StepLR", steplr_stepsize=1, steplr_gamma=0.5,
                     lr_scheduler_stepping="epoch"))
    assert math.isclose(step.optimizer.param_groups[0]["lr"], 0.25e-3, rel_tol=1e-9)


def test_non_finite_loss_stops_with_the_epoch_named():
    x, y = _data()
    x = x.clone()
    x[0, 0, 0, 0] = float("nan")
    m, r = _pair()
    with pytest.raises(NonFiniteLossError, match="epoch 1"):
        Unlearner(m, r, _cfg(), mean=MEAN, std=STD).fit(x, y)


@pytest.mark.skipif(not cpu_supports_bf16(), reason="torch reports no native bf16 on this CPU (or, before its CPU "
                                                     "bf16 kernels, has no probe for it)")
def test_amp_on_cpu_uses_bf16_and_stays_close_to_fp32():
    fp32 = _run(_cfg(n_rounds=1))
    amp = _run(_cfg(n_rounds=1, amp=True))
    assert amp.precision.dtype is torch.bfloat16 and fp32.precision.dtype is None
    assert math.isfinite(amp.history[0]["train_loss"])
    assert abs(amp.history[0]["train_loss_cl"] - fp32.history[0]["train_loss_cl"]) < 0.1


def test_amp_on_cpu_is_fp32_where_torch_cannot_report_native_bf16(monkeypatch):
    """torch 1.11 has no CPU bf16 probe, and its bf16 convolutions are far slower than fp32."""
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.delattr(torch.cpu, probe, raising=False)
    assert not cpu_supports_bf16()
    amp = _run(_cfg(n_rounds=1, amp=True))
    assert amp.precision.dtype is None and "reports no native bf16 on this CPU, so autocast is off" in amp.precision.note


def test_non_finite_adversarial_term_stops_before_any_update():
    # The clean term is backwarded before PGD; a NaN in the term on x~ must still stop the
    # batch before the optimizer moves a single weight.
    real = SARLoss()

    def nan_adversarial(*args, **kwargs):
        parts = real(*args, **kwargs)
        return {**parts, "loss": parts["loss"] * float("nan")}

    x, y = _data()
    m, r = _pair()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    u = Unlearner(m, r, _cfg(), mean=MEAN, std=STD, outer_loss=nan_adversarial)
    assert u.split_outer  # the path where the clean half is backwarded first
    with pytest.raises(NonFiniteLossError, match="loss became nan in epoch 1"):
        u.fit(x, y)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
