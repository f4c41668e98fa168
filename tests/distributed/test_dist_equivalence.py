"""One SAU run split over 2 gloo processes equals the single-process run with the same global
batch: per-epoch ACC / ASR / R-ACC equal, training figures and final weights allclose.

Float64; uneven slices (19 clean samples in batches of 8: 8, 8, 3), and runs where a rank
has an empty slice (17 in batches of 8: 8, 8, 1), which torch 1.x refuses with a ConfigError
(it cannot run a channels_last convolution on an empty batch). Weights agree to rounding, not bitwise: gradients are summed
over ranks in another order, and per-sample work at another batch size may sum in another
order too; in float64 that is about 1e-15 relative, the tolerance below leaves room for
Adam's few steps to amplify it.
"""

import pytest
import torch
import torch.multiprocessing as mp

from sau_plugin.core.parallel import empty_batches_run
from tests.distributed import workers

SPECS = {
    # h = h_bd and a large ball: every sample of the first batch is shared after 2 steps (early stop)
    "sau_early_stop": {"n": 19, "h_is_h_bd": True, "cfg": dict(n_rounds=1, batch_size=8, lr=1e-2, trigger_norm=1.0,
                                                               adv_lr=0.5)},
    "sau_fixed_bn": {"n": 19, "cfg": dict(n_rounds=2, batch_size=8, lr=1e-2)},
    "sau_train_mode": {"n": 19, "cfg": dict(n_rounds=2, batch_size=8, lr=1e-2, train_mode=True)},
    "at_outer_steps_2": {"n": 15, "cfg": dict(n_rounds=1, batch_size=4, lr=1e-2, variant="at", outer_steps=2,
                                              pgd_init="zero")},
    "sau_fixed_bn_empty_slice": {"n": 17, "cfg": dict(n_rounds=2, batch_size=8, lr=1e-2)},
    "sau_train_mode_empty_slice": {"n": 17, "cfg": dict(n_rounds=1, batch_size=8, lr=1e-2, train_mode=True)},
}
EMPTY_RUNS = empty_batches_run()
FIGURES = ("test_acc", "test_asr", "test_ra")
RTOL, ATOL = 1e-7, 1e-9


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    out, models = tmp / "ranks.pt", str(tmp / "models.pt")
    workers.make_models(models)
    mp.spawn(workers.rank_main, args=(2, str(tmp / "init"), SPECS, models, str(out)), nprocs=2, join=True)
    split = torch.load(out)
    single = {name: workers.run(spec, models) for name, spec in SPECS.items()}
    return single, split


def test_the_runs_exercise_early_stop_and_change_the_figures(runs):
    single = runs[0]
    assert single["sau_early_stop"]["history"][0]["train_pgd_steps"] < 5
    figures = {tuple(row[k] for k in FIGURES) for run in single.values() for row in run["history"]}
    assert len(figures) > 3  # the compared figures move with the weights


def test_shared_pgd_stops_early_only_when_the_global_batch_is_shared(runs):
    assert workers.early_stop_steps() == 5
    assert runs[1]["early_stop_steps"] == [5, 5]  # rank 0's slice alone is shared after 1 step


@pytest.mark.parametrize("name", sorted(SPECS))
def test_two_processes_equal_one(runs, name):
    single, split = runs[0][name], runs[1][name]
    if name.endswith("_empty_slice") and not EMPTY_RUNS:
        assert "leaves a process without samples" in split["refused"]
        return
    assert len(single["history"]) == len(split["history"]) == SPECS[name]["cfg"]["n_rounds"]
    for a, b in zip(single["history"], split["history"]):
        assert {k: a[k] for k in FIGURES} == {k: b[k] for k in FIGURES}
        train = sorted(k for k in a if k.startswith("train_") or k.endswith("_avg_over_batch"))
        assert train == sorted(k for k in b if k.startswith("train_") or k.endswith("_avg_over_batch"))
        for k in train:
            assert b[k] == pytest.approx(a[k], rel=RTOL, abs=ATOL), k
    assert single["state"].keys() == split["state"].keys()
    for k, v in single["state"].items():
        torch.testing.assert_close(split["state"][k], v, rtol=RTOL, atol=ATOL, msg=k)


def _stop_run(tmp_path, spec):
    models = str(tmp_path / "models.pt")
    workers.make_models(models)
    out = tmp_path / "stopped"
    mp.spawn(workers.stop_main, args=(2, str(tmp_path / "init"), spec, models, str(out)), nprocs=2, join=True)
    return [torch.load(f"{out}.{rank}") for rank in range(2)]


def test_a_stop_asked_on_one_rank_stops_every_rank_after_the_same_batch(tmp_path):
    assert _stop_run(tmp_path, SPECS["sau_fixed_bn"]) == [(True, 0, 2), (True, 0, 2)]


def test_a_non_finite_loss_on_one_rank_is_raised_on_every_rank_before_any_update(tmp_path):
    seen = _stop_run(tmp_path, {**SPECS["sau_fixed_bn"], "nan_on_rank_1": True})
    assert seen == [("NonFiniteLossError", 0, "loss became non-finite in epoch 1")] * 2
