"""The appendix's shared perturbations: universal (A.4) and targeted (A.5)."""

import copy

import pytest
import torch
import torch.nn as nn

from sau_plugin import ConfigError, SAUConfig, Unlearner
from sau_plugin.core import SharedPGD, TargetedSharedPGD, UniversalPGD, UniversalSharedPGD, targeted_objective
from sau_plugin.core.variants import get_variant
from tests.helpers.synthetic import MEAN, STD, make, normalize, small_cnn


def _pair(seed=0):
    torch.manual_seed(seed)
    m = small_cnn().eval()
    torch.manual_seed(seed + 1)
    return m, small_cnn().eval()


@pytest.mark.parametrize("norm,bound", [("L_inf", 0.2), ("L2", 1.0), ("L1", 20.0)])
def test_universal_is_one_tensor_broadcast_over_the_batch_inside_s(norm, bound):
    h, h_bd = _pair()
    x, y = make(12, 3)
    x = normalize(x)
    attack = UniversalSharedPGD(h, h_bd, bound=bound, norm=norm, step_size=0.2, steps=3, init="random",
                                mean=MEAN, std=STD, generator=torch.Generator().manual_seed(0))
    res = attack(x, y)
    assert res.pert.shape == (1, *x.shape[1:])
    # every image carries the same perturbation: x~ - x is one tensor (in pixel space)
    delta = (x * 0.25 + 0.5) - 0  # denormalised clean images
    diff = (res.x_adv * 0.25 + 0.5) - delta
    torch.testing.assert_close(diff, res.pert.expand_as(diff), atol=1e-5, rtol=0)
    flat = res.pert.flatten()
    size = {"L_inf": flat.abs().max(), "L2": flat.norm(), "L1": flat.abs().sum()}[norm]
    assert size <= bound * (1 + 1e-5)


def test_universal_persists_across_calls_and_in_the_state():
    h, h_bd = _pair()
    x, y = make(8, 4)
    attack = UniversalSharedPGD(h, h_bd, bound=0.2, step_size=0.05, steps=1, init="zero", mean=MEAN, std=STD)
    first = attack(normalize(x), y).pert
    again = copy.deepcopy(attack)
    second = attack(normalize(x), y).pert
    assert first.abs().sum() > 0
    # the second call starts from the first one's result: one more step of 0.05 from there, not from zero
    assert (second - first).abs().max() <= 0.05 + 1e-6 and not torch.equal(second, first)
    fresh = UniversalSharedPGD(h, h_bd, bound=0.2, step_size=0.05, steps=1, init="zero", mean=MEAN, std=STD)
    fresh.load_state_dict(again.state_dict())
    torch.testing.assert_close(fresh(normalize(x), y).pert, second)


def test_universal_vanilla_pgd_is_universal_too():
    h, _ = _pair()
    x, y = make(6, 5)
    res = UniversalPGD(h, bound=0.1, step_size=0.1, steps=2, mean=MEAN, std=STD)(normalize(x), y)
    assert res.pert.shape == (1, *x.shape[1:])


def test_targeted_objective_moves_both_models_toward_k():
    # Hand-built: two linear models on 4 features; K = 2. A few descent steps on the targeted
    # objective (in input space) raise p_K of both models and make them both predict K.
    h, h_bd = nn.Linear(4, 3), nn.Linear(4, 3)
    with torch.no_grad():
        h.weight.copy_(torch.eye(3, 4)), h.bias.zero_()
        h_bd.weight.copy_(torch.eye(3, 4) + 0.3 * torch.tensor([[0, 0, 0, 1.0], [0, 0, 0, 0], [1.0, 0, 0, 0]]))
        h_bd.bias.zero_()
    x = torch.tensor([[2.0, 0, 0, 0], [0, 2.0, 0, 0], [1.5, 0.5, 0, 1.0], [0.2, 1.0, 0, 0], [0, 0, 2.0, 0]])
    y = torch.tensor([0, 1, 0, 1, 2])
    k = 2
    assert not (h(x).argmax(1)[:4] == k).any() and not (h_bd(x).argmax(1)[:4] == k).any()
    z = x.clone().requires_grad_(True)
    p0 = torch.softmax(h(x), 1)[:, k], torch.softmax(h_bd(x), 1)[:, k]
    for _ in range(200):
        obj = targeted_objective(h(z), h_bd(z), y, k, beta_1=1.0, beta_2=1.0)
        grad, = torch.autograd.grad(obj.loss, z)
        z = (z - 0.05 * grad.sign()).detach().requires_grad_(True)
    with torch.no_grad():
        p1 = torch.softmax(h(z), 1)[:, k], torch.softmax(h_bd(z), 1)[:, k]
        active = y != k
        assert (p1[0][active] > p0[0][active]).all() and (p1[1][active] > p0[1][active]).all()
        assert (h(z).argmax(1)[active] == k).all() and (h_bd(z).argmax(1)[active] == k).all()
    # a sample of class K is outside D_-K: it counts as done and adds nothing to the loss
    obj = targeted_objective(h(x), h_bd(x), torch.full((5,), k), k, 1.0, 1.0)
    assert obj.shared.all() and obj.loss.item() == 0.0


def test_targeted_pgd_reaches_k_and_leaves_class_k_samples_alone():
    h, h_bd = _pair()
    x, y = make(16, 6)
    x = normalize(x)
    k = 3
    attack = TargetedSharedPGD(h, h_bd, target=k, bound=1.0, step_size=0.1, steps=30, mean=MEAN, std=STD,
                               beta_1=1.0)
    res = attack(x, y)
    with torch.no_grad():
        before = (h(x).argmax(1) == k) & (h_bd(x).argmax(1) == k)
        after = (h(res.x_adv).argmax(1) == k) & (h_bd(res.x_adv).argmax(1) == k)
    active = y != k
    assert after[active].float().mean() > before[active].float().mean()
    assert after[active].float().mean() >= 0.75
    assert (res.pert[~active] == 0).all()  # D_-K: class-K samples keep x~ = x
    torch.testing.assert_close(res.x_adv[~active], x[~active])


def _cfg(**kw):
    return SAUConfig(**{**dict(device="cpu", amp=False, n_rounds=1, batch_size=8, lr=1e-3), **kw})


def test_settings_choose_the_attack_class():
    h, h_bd = _pair()
    assert type(Unlearner(h, h_bd, _cfg()).attack) is SharedPGD
    assert type(Unlearner(h, h_bd, _cfg(perturbation="universal")).attack) is UniversalSharedPGD
    assert type(Unlearner(h, h_bd, _cfg(variant="sau_universal")).attack) is UniversalSharedPGD
    assert type(Unlearner(h, h_bd, _cfg(variant="at", perturbation="universal")).attack) is UniversalPGD
    t = Unlearner(h, h_bd, _cfg(target_label=4)).attack
    assert type(t) is TargetedSharedPGD and t.target == 4
    assert type(Unlearner(h, h_bd, _cfg(variant="sau_targeted", target_label="1")).attack) is TargetedSharedPGD
    assert get_variant("sau_uap").paper == "A.4" and get_variant("sau-targeted").paper == "A.5"


@pytest.mark.parametrize("kw,words", [
    (dict(variant="sau_targeted"), "needs target_label"),
    (dict(variant="at", target_label=1), "variant 'at'"),
    (dict(perturbation="universal", target_label=1), "not implemented"),
    (dict(perturbation="patch"), "perturbation must be one of sample, universal"),
    (dict(target_label="seven"), "class index"),
    (dict(variant="ft", perturbation="universal"), "needs an inner attack"),
])
def test_bad_settings_are_refused_with_the_cause(kw, words):
    with pytest.raises(ConfigError, match=words):
        _cfg(**kw)


def test_estimate_must_be_resolved_before_the_attack_is_built():
    h, h_bd = _pair()
    with pytest.raises(ConfigError, match="estimate"):
        Unlearner(h, h_bd, _cfg(target_label="estimate"))


def test_universal_perturbation_resumes_bit_for_bit():
    x, y = make(24, 7)
    x = normalize(x)
    cfg = _cfg(perturbation="universal", n_rounds=2, pgd_init="random")
    h, h_bd = _pair()
    full = Unlearner(copy.deepcopy(h), h_bd, cfg)
    full.fit(x, y)
    part = Unlearner(copy.deepcopy(h), h_bd, cfg)
    part.fit(x, y, epochs=1)
    state = copy.deepcopy(part.state_dict())
    assert state["attack"]["pert"].shape == (1, *x.shape[1:])
    resumed = Unlearner(copy.deepcopy(h), h_bd, cfg)
    resumed.load_state_dict(state)
    resumed.fit(x, y)
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_yaml_keys_and_flags(tmp_path):
    from sau_plugin.config.cli import add_arguments, config_from_args
    import argparse

    y = tmp_path / "c.yaml"
    y.write_text("perturbation: Universal\ntarget_label: 3\n")
    with pytest.raises(ConfigError, match="targeted universal"):
        SAUConfig.from_yaml(y)
    y.write_text("perturbation: universal\n")
    assert SAUConfig.from_yaml(y).perturbation == "universal"
    y.write_text("target_label: 3\n")
    assert SAUConfig.from_yaml(y).target_label == "3"
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    cfg = config_from_args(parser.parse_args(["--yaml_path", str(y), "--target_label", "estimate", "--risk_every", "2"]))
    assert cfg.target_label == "estimate" and cfg.risk_every == 2 and cfg.method().target_label == "estimate"


def test_targeted_early_stop_waits_for_every_rank():
    """Under a split batch the stop is the group's decision: a rank whose slice is all shared
    keeps stepping while ``all_ranks`` says another rank's is not."""
    h, h_bd = _pair()
    x, y = make(16, 6)
    x = normalize(x)
    kw = dict(target=3, bound=1.0, step_size=0.5, steps=12, mean=MEAN, std=STD, beta_1=1.0)
    alone = TargetedSharedPGD(h, h_bd, **kw)(x, y)
    assert alone.steps < 12  # stops early on its own
    votes = []
    waiting = TargetedSharedPGD(h, h_bd, all_ranks=lambda flag: votes.append(flag) or False, **kw)(x, y)
    assert waiting.steps == 12 and len(votes) == 12 and any(votes)


@pytest.mark.parametrize("variant", ["sau_universal", "at"])
def test_universal_is_refused_across_processes(variant):
    from sau_plugin.core import AttackContext

    h, h_bd = _pair()
    cfg = _cfg(variant=variant, perturbation="universal").method()
    ctx = AttackContext(h, h_bd, cfg, MEAN, STD, None, torch.Generator(), parallel=object())
    with pytest.raises(ConfigError, match="one process only"):
        get_variant(variant).make_attack(ctx)
