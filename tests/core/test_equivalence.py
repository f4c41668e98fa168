"""The package's SAU equals a literal re-statement of the reference (sau_plugin/testing/reference.py).

On a small *trained* backdoored model and a partly purified copy (float64, trained in a
few seconds once per session), run for whole epochs by both implementations with the
same seeded shuffle, and compared batch by batch (perturbation, PGD steps, outer loss,
L_sar selection) and at the end (every parameter and buffer), for every norm x every
init, lmd_2, train_mode, outer_steps, several epochs, the opt-in stepped cosine schedule,
and both outer-step paths (split on CPU, joint on CUDA). ``test_fixture_exercises_every_branch``
keeps the fixture honest: early stop fires in some batches and not in others, L_sar's
clamps activate, both models are fooled into different labels, L2 / L1 points lie inside
the ball, and so on (bench_scripts/mutation_check.py shows that each of these matters).

Float64, so that sign(grad) is decided by the math, not by float32 summation order.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Dict, List

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from sau_plugin.testing import reference as ref
from sau_plugin import SAUConfig, Unlearner


K, H = 5, 8  # classes, image side (3 x 8 x 8 = 192 pixels per image)
TARGET = 0
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)  # per-channel, as CIFAR-10
D = 3 * H * H
# L2 / L1 bounds at the typical norm of a random init (U[0,1) per pixel): about half the
# samples start inside the ball, half are rescaled onto it.
NORMS = {"L_inf": (0.2, 0.2), "L2": ((D / 3) ** 0.5, 0.2), "L1": (D / 2, 0.2), "Reg": (0.2, 0.2)}
INITS = ("max", "min", "zero", "random")


# ---- the fixture: a trained backdoored model and a partly purified copy -------------------------------

def _pattern() -> torch.Tensor:
    g = torch.Generator().manual_seed(5)
    return torch.randint(0, 2, (1, 3, H, H), generator=g).double() * 2 - 1


def _make(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    protos = F.interpolate(torch.rand(K, 3, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
                           * 2 - 1, size=(H, H), mode="bilinear", align_corners=False)
    y = torch.randint(0, K, (n,), generator=g)
    x = (0.5 + 0.25 * protos[y] + 0.2 * torch.randn(n, 3, H, H, generator=g, dtype=torch.float64)).clamp(0, 1)
    return x, y


def _trigger(x01: torch.Tensor) -> torch.Tensor:
    return x01 + 0.2 * _pattern()  # a +-0.2 blend: inside the L_inf ball of radius 0.2, so PGD can find it


def _normalize(x01: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float64).view(1, 3, 1, 1)
    return (x01 - mean) / std


def _cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, K)).double()


@dataclass
class Fixture:
    model: nn.Module  # h, partly purified
    model_ref: nn.Module  # h_bd
    x: torch.Tensor  # clean subset, normalised
    y: torch.Tensor


@pytest.fixture(scope="session")
def fixture() -> Fixture:
    """h_bd: 10% of 600 images carry the blend and label TARGET; 8 epochs of Adam (about 3 s).
    h: h_bd fine-tuned to ignore the trigger on class 1 only, so that on x~ the two models
    sometimes agree (shared), sometimes both change to different labels, and h is sometimes
    confident against h_bd's label (L_sar's clamps). Both logit layers are scaled by 3 after
    training (same predictions, sharper probabilities). The seed and these choices were picked
    so that every branch counted in test_fixture_exercises_every_branch is taken."""
    with torch.random.fork_rng():
        torch.manual_seed(1)
        x, y = _make(600, 1)
        poison = torch.nonzero(y != TARGET).squeeze(1)[:60]
        x[poison], y[poison] = _trigger(x[poison]), TARGET
        model_ref = _cnn()
        opt = torch.optim.Adam(model_ref.parameters(), 1e-2)
        model_ref.train()
        for _ in range(8):
            perm = torch.randperm(len(y))
            for i in range(0, len(y), 32):
                b = perm[i:i + 32]
                opt.zero_grad()
                F.cross_entropy(model_ref(_normalize(x[b])), y[b]).backward()
                opt.step()
        model_ref.eval()
        model = copy.deepcopy(model_ref)
        xu, yu = _make(300, 4)
        part = yu == 1
        xu, yu = torch.cat([xu, _trigger(xu[part])]), torch.cat([yu, yu[part]])
        opt = torch.optim.Adam(model.parameters(), 3e-3)
        model.train()
        for _ in range(30):
            opt.zero_grad()
            F.cross_entropy(model(_normalize(xu)), yu).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            for net in (model, model_ref):
                net[-1].weight.mul_(3)
                net[-1].bias.mul_(3)
    for net in (model, model_ref):
        for p in net.parameters():
            p.grad = None
    xc, yc = _make(48, 3)
    return Fixture(model, model_ref, _normalize(xc), yc)


# ---- the two implementations, recorded batch by batch --------------------------------------------------

@dataclass
class Run:
    perts: List[torch.Tensor] = field(default_factory=list)
    steps: List[int] = field(default_factory=list)
    losses: List[float] = field(default_factory=list)  # outer loss of the last outer step of each batch
    poisoned: List[int] = field(default_factory=list)  # samples selected for L_sar per batch (last outer step)
    lrs: List[float] = field(default_factory=list)  # lr in force for each epoch
    state: Dict[str, torch.Tensor] = field(default_factory=dict)
    trace: list = field(default_factory=list)  # the literal one's intermediate masks (testing/reference.py)


def _cfg(**changes) -> SAUConfig:
    norm = changes.get("norm_type", "L_inf")
    bound, step = NORMS[norm]
    base = dict(device="cpu", amp=False, lr=1e-3, batch_size=4, n_rounds=1, random_seed=0, norm_type=norm,
                trigger_norm=bound, adv_lr=step)
    base.update(changes)
    return SAUConfig(**base)


def literal(fx: Fixture, cfg: SAUConfig) -> Run:
    model, model_ref = copy.deepcopy(fx.model), copy.deepcopy(fx.model_ref)
    mean = torch.tensor(MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float64).view(1, 3, 1, 1)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=cfg.adam_betas, weight_decay=0, amsgrad=True)
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.n_rounds)
             if cfg.lr_scheduler_stepping == "epoch" else None)
    g = torch.Generator().manual_seed(cfg.random_seed)  # the shuffle and the random init, as the package's
    run = Run()
    n = fx.x.shape[0]
    for _ in range(cfg.n_rounds):
        run.lrs.append(opt.param_groups[0]["lr"])
        order = torch.randperm(n, generator=g)
        for i in range(0, n, cfg.batch_size):
            xb, yb = fx.x[order[i:i + cfg.batch_size]], fx.y[order[i:i + cfg.batch_size]]
            pert, steps = ref.shared_pgd(model, model_ref, xb, yb, mean, std, beta_1=cfg.beta_1, beta_2=cfg.beta_2,
                                         bound=cfg.trigger_norm, norm_type=cfg.norm_type, step_size=cfg.adv_lr,
                                         num_steps=cfg.adv_steps, init_type=cfg.pgd_init, generator=g, trace=run.trace)
            for _ in range(cfg.outer_steps):
                loss = ref.outer_step(model, model_ref, opt, xb, yb, pert, mean, std, lmd_1=cfg.lmd_1, lmd_2=cfg.lmd_2,
                                      lmd_3=cfg.lmd_3, num_classes=K, train_mode=cfg.train_mode, trace=run.trace)
            run.perts.append(pert)
            run.steps.append(steps)
            run.losses.append(loss)
            run.poisoned.append(int(run.trace[-1]["potential_poison"].sum()))
        if sched is not None:
            sched.step()
    run.state = model.state_dict()
    return run


def package(fx: Fixture, cfg: SAUConfig, split: bool) -> Run:
    run = Run()

    class Recording(Unlearner):
        def run_epoch(self, images, labels):
            run.lrs.append(self.optimizer.param_groups[0]["lr"])
            return super().run_epoch(images, labels)

        def step(self, images, labels, clean_pred_ref):
            stats = super().step(images, labels, clean_pred_ref)
            run.steps.append(int(stats["pgd_steps"]))
            run.losses.append(stats["loss"])
            run.poisoned.append(round(stats["potential_poison"] * images.shape[0]))
            return stats

    auto = Unlearner(copy.deepcopy(fx.model), copy.deepcopy(fx.model_ref), cfg, mean=MEAN, std=STD)
    assert auto.split_outer == (not cfg.train_mode)  # on CPU with fixed BatchNorm
    u = Recording(copy.deepcopy(fx.model), copy.deepcopy(fx.model_ref), cfg, mean=MEAN, std=STD,
                  outer_pass="split" if split else "joint")
    assert u.split_outer == split
    attack = u.attack

    def recorded_attack(*args, **kwargs):
        res = attack(*args, **kwargs)
        run.perts.append(res.pert)
        return res

    u.attack = recorded_attack
    result = u.fit(fx.x, fx.y)
    assert len(result.history) == cfg.n_rounds
    run.state = result.model.state_dict()
    return run


def assert_same(lit: Run, pkg: Run) -> None:
    assert pkg.steps == lit.steps  # early stop in the same batches, after the same step
    assert pkg.poisoned == lit.poisoned  # the same samples enter L_sar
    assert len(pkg.perts) == len(lit.perts)
    for i, (a, b) in enumerate(zip(pkg.perts, lit.perts)):
        assert torch.allclose(a, b, rtol=1e-7, atol=1e-9), f"perturbation of batch {i}"
    assert pkg.losses == pytest.approx(lit.losses, rel=1e-7, abs=1e-12)
    assert pkg.lrs == pytest.approx(lit.lrs, rel=1e-12)
    assert pkg.state.keys() == lit.state.keys()
    for k, v in pkg.state.items():
        assert torch.allclose(v.double(), lit.state[k].double(), rtol=1e-6, atol=1e-10), k


# ---- the comparisons ------------------------------------------------------------------------------------

NORM_INIT = [dict(norm_type=n, pgd_init=i) for n in NORMS for i in INITS]
SETTINGS = [
    dict(lmd_2=0.5),
    dict(train_mode=True),
    dict(outer_steps=2),
    dict(n_rounds=3),
    dict(n_rounds=3, norm_type="L2", pgd_init="random"),  # the generator carries over epochs
    dict(n_rounds=3, lr_scheduler_stepping="epoch"),  # the opt-in stepped cosine schedule
]
_cache: Dict[str, Run] = {}


def _literal(fx: Fixture, changes: dict) -> Run:
    key = repr(sorted(changes.items()))
    if key not in _cache:
        _cache[key] = literal(fx, _cfg(**changes))
    return _cache[key]


def _id(changes: dict) -> str:
    return "-".join(f"{k}={v}" for k, v in changes.items()) or "default"


@pytest.mark.parametrize("changes", NORM_INIT, ids=_id)
def test_every_norm_and_init_equal_the_literal_reference(fixture, changes):
    assert_same(_literal(fixture, changes), package(fixture, _cfg(**changes), split=True))


# both outer-step paths; train_mode only has the joint one (batch statistics over [x, x~])
PATHS = [(ch, split) for ch in [dict()] + SETTINGS for split in (True, False) if not (split and ch.get("train_mode"))]


@pytest.mark.parametrize("changes, split", PATHS, ids=[f"{_id(c)}-{'split' if s else 'joint'}" for c, s in PATHS])
def test_settings_and_epochs_equal_the_literal_reference(fixture, changes, split):
    assert_same(_literal(fixture, changes), package(fixture, _cfg(**changes), split=split))


def test_default_lr_is_constant_and_the_opt_in_schedule_decays(fixture):
    assert _literal(fixture, dict(n_rounds=3)).lrs == [1e-3] * 3  # the reference never steps its scheduler
    stepped = _literal(fixture, dict(n_rounds=3, lr_scheduler_stepping="epoch")).lrs
    assert stepped[0] == 1e-3 and stepped[0] > stepped[1] > stepped[2] > 0


# ---- the fixture must keep exercising every branch --------------------------------------------------------

def branch_counts(runs: List[Run]) -> Dict[str, int]:
    """How often each branch of the reference was taken in the literal runs' traces."""
    c = dict.fromkeys([
        "pgd_batches_stopped_early", "pgd_batches_full_length", "both_fooled_different_labels",
        "shared", "not_shared", "h_clean_wrong", "h_bd_clean_wrong", "h_clean_differs_from_h_bd",
        "ball_start_inside", "ball_start_outside", "ball_inside_after_step", "sar_selected",
        "sar_clamped", "sar_unclamped", "sar_near_clamp", "sar_excluded_as_clean_prediction"], 0)
    for run in runs:
        first_projection = True
        for t in run.trace:
            if "projection_norm" in t:  # L2 / L1 only; the first of each PGD run is the init's
                n, bound = t["projection_norm"], t["bound"]
                inside = int(((n > 0) & (n < bound * (1 - 1e-9))).sum())
                if first_projection:
                    c["ball_start_inside"] += inside
                    c["ball_start_outside"] += int((n > bound).sum())
                else:
                    c["ball_inside_after_step"] += inside
                first_projection = False
            elif "step" in t:
                fooled, fooled_ref = t["success_attack"], t["success_attack_ref"]
                c["both_fooled_different_labels"] += int((fooled & fooled_ref & (t["pert_label"] != t["pert_label_ref"])).sum())
                c["shared"] += int(t["shared_attack"].sum())
                c["not_shared"] += int((~t["shared_attack"]).sum())
                c["h_clean_wrong"] += int((t["ori_lab"] != t["labels"]).sum())
                c["h_bd_clean_wrong"] += int((t["ori_lab_ref"] != t["labels"]).sum())
                c["h_clean_differs_from_h_bd"] += int((t["ori_lab"] != t["ori_lab_ref"]).sum())
            elif "pgd_steps" in t:
                early = t["pgd_steps"] < t["num_steps"]
                c["pgd_batches_stopped_early" if early else "pgd_batches_full_length"] += 1
                first_projection = True
            elif "potential_poison" in t:
                sel, p = t["potential_poison"], t["pos_p"][t["potential_poison"]]
                c["sar_selected"] += int(sel.sum())
                c["sar_clamped"] += int((p < 1e-3).sum())  # p_{y~} below 0.001: both clamps bind
                c["sar_unclamped"] += int((p >= 1e-3).sum())
                c["sar_near_clamp"] += int(((p >= 1e-3) & (p < 1e-2)).sum())
                y_tilde = t["pert_label_ref_outer"]
                c["sar_excluded_as_clean_prediction"] += int(((y_tilde != t["outer_labels"])
                                                              & (y_tilde == t["ori_lab_ref_outer"])).sum())
    return c


def test_fixture_exercises_every_branch(fixture):
    counts = branch_counts([_literal(fixture, ch) for ch in NORM_INIT + SETTINGS])
    assert all(v > 0 for v in counts.values()), counts
    default = branch_counts([_literal(fixture, dict())])
    # within the default run alone: early stop fires in some batches and not in others; L_sar clamps
    assert default["pgd_batches_stopped_early"] > 0 and default["pgd_batches_full_length"] > 0, default
    assert default["sar_clamped"] > 0 and default["both_fooled_different_labels"] > 0, default
