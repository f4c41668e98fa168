"""The package's SAU equals a literal re-statement of the reference (tests/reference_sau.py).

Speed work (masks instead of indexing, input-only gradients, cached clean predictions,
channels_last) must keep these passing. Run in float64 so that sign(grad) is decided by
the math, not by float32 summation order.
"""

import copy

import pytest
import torch

import reference_sau as ref
from sau_plugin import SAUConfig, SharedPGD, Unlearner, create_model

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.247, 0.243, 0.261)


def _models(seed=0, width=8, num_classes=10):
    torch.manual_seed(seed)
    model_ref = create_model("preactresnet18", num_classes, width=width).double()
    model_ref.train()
    with torch.no_grad():  # non-trivial BatchNorm running statistics
        for _ in range(3):
            model_ref(torch.randn(32, 3, 16, 16, dtype=torch.float64) * 2 + 0.5)
    model_ref.eval()
    model = copy.deepcopy(model_ref)
    with torch.no_grad():  # h already moved away from h_bd, as after some unlearning
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p) * p.std().clamp_min(1e-3))
    return model, model_ref


def _batch(seed=1, n=24, num_classes=10):
    g = torch.Generator().manual_seed(seed)
    x01 = torch.rand(n, 3, 16, 16, generator=g, dtype=torch.float64)
    mean = torch.tensor(MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float64).view(1, 3, 1, 1)
    return (x01 - mean) / std, torch.randint(0, num_classes, (n,), generator=g), mean, std


PGD_SETTINGS = [
    dict(norm_type="L_inf", trigger_norm=0.2, adv_lr=0.2, pgd_init="max"),
    dict(norm_type="L_inf", trigger_norm=0.1, adv_lr=0.1, pgd_init="zero"),
    dict(norm_type="L_inf", trigger_norm=0.2, adv_lr=0.1, pgd_init="min"),
    dict(norm_type="L2", trigger_norm=5.0, adv_lr=0.2, pgd_init="max"),
    dict(norm_type="L1", trigger_norm=300.0, adv_lr=0.2, pgd_init="max"),
]


@pytest.mark.parametrize("setting", PGD_SETTINGS, ids=lambda s: f"{s['norm_type']}-{s['trigger_norm']}-{s['pgd_init']}")
def test_shared_pgd_equals_literal_reference(setting):
    model, model_ref = _models()
    x, y, mean, std = _batch()
    lit_pert, lit_steps = ref.shared_pgd(
        copy.deepcopy(model), copy.deepcopy(model_ref), x, y, mean, std, beta_1=0.01, beta_2=1.0,
        bound=setting["trigger_norm"], norm_type=setting["norm_type"], step_size=setting["adv_lr"], num_steps=5,
        init_type=setting["pgd_init"])
    attack = SharedPGD(model, model_ref, beta_1=0.01, beta_2=1.0, bound=setting["trigger_norm"],
                       norm=setting["norm_type"], step_size=setting["adv_lr"], steps=5, init=setting["pgd_init"],
                       mean=MEAN, std=STD)
    res = attack(x, y)
    assert res.steps == lit_steps
    assert torch.allclose(res.pert, lit_pert, rtol=1e-7, atol=1e-9)
    assert (res.pert != 0).any()


@pytest.mark.parametrize("split", [True, False], ids=["split-outer", "joint-outer"])
@pytest.mark.parametrize(
    "changes",
    [dict(), dict(lmd_2=0.5), dict(train_mode=True), dict(norm_type="L2", trigger_norm=5.0), dict(outer_steps=2)],
    ids=["default", "lmd_2", "train_mode", "L2", "outer_steps2"],
)
def test_one_sau_update_equals_literal_reference(changes, split):
    cfg = SAUConfig(device="cpu", amp=False, lr=1e-3, batch_size=24, **changes)
    model, model_ref = _models()
    x, y, mean, std = _batch()

    # literal: PGD, then outer_steps optimizer steps, the reference's way
    lit_model, lit_ref = copy.deepcopy(model), copy.deepcopy(model_ref)
    lit_opt = torch.optim.Adam(lit_model.parameters(), lr=cfg.lr, betas=cfg.adam_betas, weight_decay=0, amsgrad=True)
    lit_pert, _ = ref.shared_pgd(lit_model, lit_ref, x, y, mean, std, beta_1=cfg.beta_1, beta_2=cfg.beta_2,
                                 bound=cfg.trigger_norm, norm_type=cfg.norm_type, step_size=cfg.adv_lr,
                                 num_steps=cfg.adv_steps, init_type=cfg.pgd_init)
    for _ in range(cfg.outer_steps):
        if cfg.train_mode:
            lit_model.train()
        ref.outer_step(lit_model, lit_ref, lit_opt, x, y, lit_pert, mean, std, lmd_1=cfg.lmd_1, lmd_2=cfg.lmd_2,
                       lmd_3=cfg.lmd_3, num_classes=10)
        lit_model.eval()

    # package
    u = Unlearner(model, model_ref, cfg, mean=MEAN, std=STD)
    assert u.split_outer == (not cfg.train_mode)  # on CPU with fixed BatchNorm
    u.split_outer = split and not cfg.train_mode  # both paths (CUDA runs the joint one)
    with torch.no_grad():
        clean_pred_ref = model_ref(x).argmax(1)
    stats = u.step(x, y, clean_pred_ref)
    assert stats["potential_poison"] > 0  # the L_sar path is exercised

    lit_state, state = lit_model.state_dict(), u.model.state_dict()
    assert lit_state.keys() == state.keys()
    for k in state:
        assert torch.allclose(state[k].double(), lit_state[k].double(), rtol=1e-6, atol=1e-10), k
    changed = any(not torch.equal(state[k], v) for k, v in copy.deepcopy(_models()[0]).state_dict().items())
    assert changed


def test_three_epochs_equal_literal_reference_loop():
    # Several epochs, several batches, the same seeded shuffle: catches drift that one
    # update cannot show (cached predictions, the clean half backwarded before PGD).
    cfg = SAUConfig(device="cpu", amp=False, lr=1e-3, batch_size=16, n_rounds=3, random_seed=3, lr_scheduler="none")
    model, model_ref = _models()
    x, y, mean, std = _batch(n=40)

    lit_model, lit_ref = copy.deepcopy(model), copy.deepcopy(model_ref)
    lit_opt = torch.optim.Adam(lit_model.parameters(), lr=cfg.lr, betas=cfg.adam_betas, weight_decay=0, amsgrad=True)
    g = torch.Generator().manual_seed(cfg.random_seed)
    for _ in range(cfg.n_rounds):
        order = torch.randperm(x.shape[0], generator=g)
        for i in range(0, x.shape[0], cfg.batch_size):
            xb, yb = x[order[i:i + cfg.batch_size]], y[order[i:i + cfg.batch_size]]
            pert, _ = ref.shared_pgd(lit_model, lit_ref, xb, yb, mean, std, beta_1=cfg.beta_1, beta_2=cfg.beta_2,
                                     bound=cfg.trigger_norm, norm_type=cfg.norm_type, step_size=cfg.adv_lr,
                                     num_steps=cfg.adv_steps, init_type=cfg.pgd_init)
            ref.outer_step(lit_model, lit_ref, lit_opt, xb, yb, pert, mean, std, lmd_1=cfg.lmd_1, lmd_2=cfg.lmd_2,
                           lmd_3=cfg.lmd_3, num_classes=10)

    result = Unlearner(model, model_ref, cfg, mean=MEAN, std=STD).fit(x, y)
    assert len(result.history) == 3 and result.history[-1]["train_potential_poison"] > 0
    lit_state = lit_model.state_dict()
    for k, v in result.model.state_dict().items():
        assert torch.allclose(v.double(), lit_state[k].double(), rtol=1e-6, atol=1e-10), k
    with torch.no_grad():
        assert torch.equal(result.model(x).argmax(1), lit_model(x).argmax(1))
