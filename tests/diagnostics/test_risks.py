"""The risks of Proposition 3 / appendix A.5 from predictions, and their measurement."""

import copy

import pytest
import torch

from sau_plugin.core import PGD, SharedPGD
from sau_plugin.risks import measure_risks, risk_chain
from sau_plugin.run.risk_report import chain_summary, risk_rows
from tests.helpers.synthetic import MEAN, STD, backdoored_task

T = torch.tensor


def test_chain_on_hand_built_predictions():
    # six samples of D_-y^ (backdoor label 0); true labels 1..3
    y = T([1, 2, 3, 1, 2, 3])
    y_bd = T([0, 0, 0, 0, 0, 0])
    ref_poisoned = T([0, 0, 0, 0, 2, 3])  # D_s: h_bd sends the first four to 0
    poisoned = T([0, 2, 3, 1, 2, 3])  # h still fooled by the trigger on sample 0: R_bd = 1/6
    # one attack: h(x~), h_bd(x~)
    cand = (T([0, 0, 3, 2, 1, 1]),  # wrong on 0, 1, 3, 4, 5 -> R_adv = 5/6
            T([0, 4, 3, 2, 3, 0]))  # shared (h = h_bd != y) on 0, 3 -> R_shared = 2/6
    r = risk_chain(y, y_bd, poisoned, ref_poisoned, [cand], target=0)
    assert r["risk_bd"] == pytest.approx(1 / 6) and r["risk_adv"] == pytest.approx(5 / 6)
    assert r["risk_shared"] == pytest.approx(2 / 6) and r["risk_d_s"] == pytest.approx(4 / 6)
    # R_sub: shared on D_s (samples 0, 3 shared; 1 not shared; 2 not fooled), adv off D_s (4, 5 wrong) -> 4/6
    assert r["risk_sub"] == pytest.approx(4 / 6)
    # targeted (K = 0): h(x~) = 0 on 0 and 1 -> R_tadv 2/6; R_tsub: on D_s both = 0: only sample 0 -> 1/6
    assert r["risk_tadv"] == pytest.approx(2 / 6) and r["risk_tsub"] == pytest.approx(1 / 6)
    assert r["chain"] and r["tchain"]
    # a trigger stronger than every perturbation found: R_bd > R_sub, the chain fails
    r2 = risk_chain(y, y_bd, T([0, 0, 0, 0, 0, 3]), ref_poisoned, [cand], target=0)
    assert r2["risk_bd"] == pytest.approx(5 / 6) and not r2["chain"] and not r2["tchain"]


def test_each_risk_is_maximised_per_sample_over_the_attacks():
    y, y_bd = T([1, 2]), T([0, 0])
    ref_poisoned = T([0, 0])
    a = (T([1, 0]), T([1, 0]))  # sample 1 shared
    b = (T([0, 2]), T([0, 2]))  # sample 0 shared
    r = risk_chain(y, y_bd, T([1, 2]), ref_poisoned, [a, b])
    assert r["risk_shared"] == 1.0 and r["risk_sub"] == 1.0 and r["risk_adv"] == 1.0
    assert "risk_tsub" not in r and "tchain" not in r
    with pytest.raises(ValueError, match="candidate"):
        risk_chain(y, y_bd, y, y, [])


def test_chain_summary_names_the_failing_epochs():
    initial = {"test_acc": 0.9, "risk_adv": 1.0, "risk_bd": 0.9, "risk_shared": 1, "risk_sub": 1, "risk_d_s": 1,
               "chain": 1.0}
    hist = [{**initial, "epoch": 0.0, "chain": 0.0}, {"epoch": 1.0, "test_acc": 0.9}, {**initial, "epoch": 2.0}]
    rows = risk_rows(initial, hist)
    assert [r["epoch"] for r in rows] == [0, 1, 3]  # epochs completed; epoch index 1 was not measured
    s = chain_summary(rows)
    assert s == {"points": 3, "chain_held_every_epoch": False, "chain_failed_at_epochs": [1]}


def test_measured_risks_fall_with_the_backdoor_on_a_trained_model():
    model, _, _, (xp, yb, yo) = backdoored_task()
    # D_-y^ clean images: rebuild from the poisoned ones is not possible; use the generator's pairing
    from tests.helpers.synthetic import make, normalize
    xte, yte = make(500, 2)
    keep = yte != 0
    x_clean = normalize(xte[keep])
    kw = dict(bound=0.2, step_size=0.2, steps=5, mean=MEAN, std=STD)
    ref = copy.deepcopy(model)
    attacks = [SharedPGD(model, ref, **kw), PGD(model, **kw)]
    r = measure_risks(model, ref, [(x_clean, yo, xp, yb)], attacks, target=0)
    assert r["risk_bd"] > 0.8  # the backdoored model against itself: every risk is high
    assert r["risk_shared"] == r["risk_adv"]  # h = h_bd: every adversarial example is shared
    assert r["risk_sub"] <= r["risk_adv"] and r["risk_tsub"] <= r["risk_sub"]
