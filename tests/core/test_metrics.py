"""ACC / ASR / R-ACC on a model whose predictions are known by construction; adversarial risks."""

import math

import pytest
import torch
import torch.nn as nn

from sau_plugin import PGD, SharedPGD, adversarial_risks, batches, evaluate_backdoor, evaluate_clean


class Lookup(nn.Module):
    """Predicts the class stored in pixel [0, 0, 0] of each image (logit 5 there, 0 elsewhere)."""

    def __init__(self, k=4):
        super().__init__()
        self.k = k

    def forward(self, x):
        cls = x[:, 0, 0, 0].round().long().clamp(0, self.k - 1)
        return torch.nn.functional.one_hot(cls, self.k).float() * 5.0


def _images(classes):
    x = torch.zeros(len(classes), 1, 2, 2)
    x[:, 0, 0, 0] = torch.tensor(classes, dtype=torch.float)
    return x


def test_clean_accuracy_and_loss_over_batches():
    preds = [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    labels = torch.tensor([0, 1, 2, 3, 1, 1, 2, 0, 0, 0])  # 7 of 10 right
    out = evaluate_clean(Lookup(), batches(_images(preds), labels, batch_size=4))
    assert out["test_acc"] == pytest.approx(0.7)
    right = -math.log(math.exp(5) / (math.exp(5) + 3))
    wrong = -math.log(1 / (math.exp(5) + 3))
    per_batch = [(4 * right) / 4, (2 * right + 2 * wrong) / 4, (1 * right + 1 * wrong) / 2]
    assert out["clean_test_loss_avg_over_batch"] == pytest.approx(sum(per_batch) / 3, rel=1e-5)


def test_asr_and_racc_come_from_one_pass():
    preds = [0, 0, 0, 2, 3, 1]  # backdoor label 0; true labels below
    y_bd = torch.zeros(6, dtype=torch.long)
    y_orig = torch.tensor([1, 2, 3, 2, 3, 3])
    calls = []

    class Counting(Lookup):
        def forward(self, x):
            calls.append(x.shape[0])
            return super().forward(x)

    out = evaluate_backdoor(Counting(), batches(_images(preds), y_bd, y_orig, batch_size=4))
    assert out["test_asr"] == pytest.approx(3 / 6)
    assert out["test_ra"] == pytest.approx(2 / 6)
    assert sum(calls) == 6  # each poisoned image is run once, not once per label


class MeanPixel(nn.Module):
    def __init__(self, threshold):
        super().__init__()
        self.threshold = threshold

    def forward(self, x):
        s = 50 * (x.mean(dim=(1, 2, 3)) - self.threshold)
        return torch.stack([-s, s], dim=1)


def test_adversarial_and_shared_adversarial_risk():
    x = torch.full((6, 1, 4, 4), 0.4)
    y = torch.zeros(6, dtype=torch.long)
    h, h_same, h_robust = MeanPixel(0.5), MeanPixel(0.5), MeanPixel(5.0)
    both = adversarial_risks(h, h_same, batches(x, y, batch_size=4), SharedPGD(h, h_same, steps=2))
    assert both == {"adv_risk": 1.0, "shared_adv_risk": 1.0}
    # vanilla PGD fools h, but h_robust disagrees: adversarial, not shared
    alone = adversarial_risks(h, h_robust, batches(x, y, batch_size=4), PGD(h, steps=2))
    assert alone == {"adv_risk": 1.0, "shared_adv_risk": 0.0}
    # shared PGD's JS term pulls h back to agree with h_robust: not even adversarial
    pulled = adversarial_risks(h, h_robust, batches(x, y, batch_size=4), SharedPGD(h, h_robust, steps=2))
    assert pulled == {"adv_risk": 0.0, "shared_adv_risk": 0.0}
