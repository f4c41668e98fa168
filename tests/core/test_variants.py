"""Variants are registry entries; a user's own attack object and outer loss plug into Unlearner."""

import copy

import pytest
import torch
import torch.nn.functional as F

import sau_plugin
from sau_plugin import ConfigError, SAUConfig, Unlearner
from sau_plugin.core import PGDResult, SARLoss, register_variant
from sau_plugin.core.variants import VARIANT_ALIASES, VARIANTS, get_variant
from tests.helpers.synthetic import MEAN, STD, make, normalize, small_cnn

N, BATCH, OUTER_STEPS = 32, 16, 2  # two batches per epoch


def _cfg(**kw):
    return SAUConfig(**{**dict(device="cpu", amp=False, n_rounds=1, batch_size=BATCH, lr=1e-2,
                               outer_steps=OUTER_STEPS), **kw})


def _pair():
    torch.manual_seed(0)
    m = small_cnn().eval()
    return m, copy.deepcopy(m)


def _data():
    x, y = make(N, 5)
    return normalize(x), y


class FGSM:
    """One signed-gradient step on the purified model (L_inf, in normalised space for brevity)."""

    def __init__(self, model, eps=0.1):
        self.model, self.eps, self.calls = model, eps, 0

    def __call__(self, images, labels, clean_pred, clean_pred_ref):
        self.calls += 1
        x = images.detach().clone().requires_grad_(True)
        grad, = torch.autograd.grad(F.cross_entropy(self.model(x), labels), x)
        x_adv = (images + self.eps * grad.sign()).detach()
        return PGDResult(x_adv - images, x_adv, 1)


class DoubleCE:
    name = "2ce"

    def __init__(self):
        self.calls = 0

    def __call__(self, logits_adv, labels, x_adv, clean_pred_ref, model_ref, cfg, precision):
        self.calls += 1
        loss_2ce = F.cross_entropy(logits_adv, labels)
        return {"loss_2ce": loss_2ce, "loss": 2 * loss_2ce}


def _state(u):
    return {k: v.clone() for k, v in u.model.state_dict().items()}


@pytest.mark.parametrize("outer_pass", ["split", "joint"])
def test_a_custom_attack_object_and_outer_loss_plug_in(outer_pass):
    m, r = _pair()
    attack, loss = FGSM(m), DoubleCE()
    u = Unlearner(m, r, _cfg(), mean=MEAN, std=STD, attack=attack, outer_loss=loss, outer_pass=outer_pass)
    assert u.attack is attack and u.outer_loss is loss
    u.fit(*_data())
    assert attack.calls == N // BATCH  # once per batch
    assert loss.calls == N // BATCH * OUTER_STEPS  # once per outer step
    row = u.history[0]
    assert row["train_pgd_steps"] == 1 and "train_loss_2ce" in row and "train_loss_sar" not in row
    sau = Unlearner(*_pair(), _cfg(), mean=MEAN, std=STD, outer_pass=outer_pass)
    sau.fit(*_data())
    assert any(not torch.equal(a, b) for a, b in zip(_state(u).values(), _state(sau).values()))


def test_each_piece_alone_replaces_only_that_piece():
    m, r = _pair()
    loss = DoubleCE()
    u = Unlearner(m, r, _cfg(variant="at"), mean=MEAN, std=STD, outer_loss=loss)
    assert type(u.attack).__name__ == "PGD"  # the variant's attack, the user's loss
    u.fit(*_data())
    assert loss.calls == N // BATCH * OUTER_STEPS
    m, r = _pair()
    attack = FGSM(m)
    u = Unlearner(m, r, _cfg(), mean=MEAN, std=STD, attack=attack)
    assert isinstance(u.outer_loss, SARLoss)
    u.fit(*_data())
    assert attack.calls == N // BATCH and "train_loss_sar" in u.history[0]


def test_an_attack_without_an_outer_loss_is_refused():
    m, r = _pair()
    with pytest.raises(ConfigError, match="an inner attack needs an outer loss"):
        Unlearner(m, r, _cfg(variant="ft"), mean=MEAN, std=STD, attack=FGSM(m))


@pytest.fixture
def registry():
    saved, aliases = dict(VARIANTS), dict(VARIANT_ALIASES)
    yield
    VARIANTS.clear(), VARIANTS.update(saved)
    VARIANT_ALIASES.clear(), VARIANT_ALIASES.update(aliases)


def test_register_variant_makes_the_name_a_valid_setting(registry):
    built = []

    def make_fgsm(ctx):
        built.append(ctx)
        return FGSM(ctx.forward)

    with pytest.raises(ConfigError, match="variant must be one of sau, at, ft, a\\+d, c\\+b, sau_universal, sau_targeted; got 'fgsm\\+b'"):
        SAUConfig(variant="fgsm+b")
    assert sau_plugin.register_variant is register_variant  # the README names it at the top level
    register_variant("fgsm+b", make_fgsm, SARLoss(), paper="FGSM+B")
    cfg = _cfg(variant="fgsm+b")
    assert (cfg.inner, cfg.outer) == ("make_fgsm", "sar") and get_variant("FGSM+B").paper == "FGSM+B"
    m, r = _pair()
    u = Unlearner(m, r, cfg, mean=MEAN, std=STD)
    assert isinstance(u.attack, FGSM) and built[0].generator is u.generator and built[0].forward is u.forward
    u.fit(*_data())
    assert u.attack.calls == N // BATCH
    with pytest.raises(ConfigError, match="variant name 'sau' is taken"):
        register_variant("sau", make_fgsm, SARLoss())
    with pytest.raises(ConfigError, match="variant must be one of sau, at, ft, a\\+d, c\\+b, sau_universal, sau_targeted, fgsm\\+b; got 'nope'"):
        SAUConfig(variant="nope")


def test_the_built_in_variants_are_registry_entries():
    assert list(VARIANTS) == ["sau", "at", "ft", "a+d", "c+b", "sau_universal", "sau_targeted"]
    pairs = {name: (v.inner, v.outer, v.paper) for name, v in VARIANTS.items()}
    assert pairs == {"sau": ("shared", "sar", "A+B"), "at": ("pgd", "at", "C+D"), "ft": (None, "ft", "FT"),
                     "a+d": ("shared", "at", "A+D"), "c+b": ("pgd", "sar", "C+B"),
                     "sau_universal": ("shared-universal", "sar", "A.4"), "sau_targeted": ("shared-targeted", "sar", "A.5")}
    assert get_variant("vanilla_at").name == "at" and get_variant("A+B").name == "sau"
    # the paper's names are accepted as keywords too, stored under the registry's name
    assert [SAUConfig(variant=v).variant for v in ("A+B", " C+D ", "Finetune")] == ["sau", "at", "ft"]
    assert SAUConfig().replace(variant="c+d").variant == "at"


def test_the_outer_pass_is_one_documented_choice():
    m, r = _pair()
    assert Unlearner(m, r, _cfg(), mean=MEAN, std=STD).split_outer  # auto: CPU, fixed BatchNorm, an attack
    assert not Unlearner(m, r, _cfg(train_mode=True), mean=MEAN, std=STD).split_outer
    assert not Unlearner(m, r, _cfg(variant="ft"), mean=MEAN, std=STD).split_outer
    with pytest.raises(ConfigError, match="outer_pass 'split' needs fixed BatchNorm"):
        Unlearner(m, r, _cfg(train_mode=True), mean=MEAN, std=STD, outer_pass="split")
    with pytest.raises(ConfigError, match="outer_pass must be one of auto, joint, split; got 'both'"):
        Unlearner(m, r, _cfg(), mean=MEAN, std=STD, outer_pass="both")
