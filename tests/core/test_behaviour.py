"""SAU removes a real (synthetic) patch backdoor on CPU, and does better than fine-tuning."""

import copy

import pytest

from sau_plugin import SAUConfig, Unlearner, batches, evaluate_backdoor, evaluate_clean
from tests.helpers.synthetic import MEAN, STD, backdoored_task


@pytest.fixture(scope="module")
def task():
    return backdoored_task()


def _evaluator(clean_test, poisoned_test):
    def evaluate(model):
        return {**evaluate_clean(model, batches(*clean_test)), **evaluate_backdoor(model, batches(*poisoned_test))}
    return evaluate


@pytest.mark.slow
def test_sau_removes_the_backdoor_and_beats_fine_tuning(task):
    model, (xcl, ycl), clean_test, poisoned_test = task
    evaluate = _evaluator(clean_test, poisoned_test)
    before = evaluate(model)
    assert before["test_asr"] >= 0.90 and before["test_acc"] >= 0.90

    budget = dict(device="cpu", amp=False, n_rounds=12, batch_size=64, lr=1e-3, lr_scheduler="none", random_seed=0)
    sau = Unlearner(copy.deepcopy(model), copy.deepcopy(model), SAUConfig(**budget), mean=MEAN, std=STD).fit(xcl, ycl)
    ft = Unlearner(copy.deepcopy(model), copy.deepcopy(model), SAUConfig(variant="ft", **budget), mean=MEAN, std=STD).fit(xcl, ycl)
    after_sau, after_ft = evaluate(sau.model), evaluate(ft.model)

    assert after_sau["test_asr"] <= 0.10, after_sau
    assert before["test_acc"] - after_sau["test_acc"] <= 0.05, after_sau
    assert after_sau["test_asr"] < after_ft["test_asr"], (after_sau, after_ft)
    assert after_sau["test_ra"] > before["test_ra"] + 0.5  # poisoned inputs get their true label back
