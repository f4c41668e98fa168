"""CUDA paths (skipped without a GPU): autocast on CUDA, fp16 with gradient scaling, the CLI."""

import copy
import json

import pytest
import torch

from sau_plugin import SAUConfig, Unlearner, batches, evaluate_backdoor, evaluate_clean
from sau_plugin.core import Precision
from tests.helpers.synthetic import MEAN, STD, backdoored_task

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def task():
    return backdoored_task()


def _purify(task, precision=None, **cfg):
    model, (xcl, ycl), clean_test, poisoned = task
    c = SAUConfig(device="cuda", n_rounds=12, batch_size=64, lr=1e-3, lr_scheduler="none", **cfg)
    m = copy.deepcopy(model).cuda()
    u = Unlearner(m, copy.deepcopy(model).cuda(), c, mean=MEAN, std=STD, precision=precision)
    u.fit(xcl, ycl)
    dev = lambda ts: tuple(t.cuda() for t in ts)
    return u, {**evaluate_clean(u.model, batches(*dev(clean_test))), **evaluate_backdoor(u.model, batches(*dev(poisoned)))}


@pytest.mark.parametrize("amp", [False, True])
def test_sau_on_cuda_removes_the_backdoor(task, amp):
    u, after = _purify(task, amp=amp)
    assert u.precision.dtype == (torch.bfloat16 if amp and torch.cuda.is_bf16_supported() else
                                 torch.float16 if amp else None)
    assert after["test_asr"] <= 0.10 and after["test_acc"] >= 0.90, after


@pytest.fixture(scope="module")
def fp16_run(task):
    return _purify(task, precision=Precision("cuda", torch.float16, True, "fp16 (forced)"), amp=True)


def test_fp16_with_gradient_scaling(fp16_run):
    u, after = fp16_run
    assert u.scaler is not None and u.scaler.get_scale() > 0
    assert all(torch.isfinite(p).all() for p in u.model.parameters())
    assert after["test_asr"] <= 0.10, after


@pytest.mark.xfail(reason="known gap: forced fp16 ends at ACC 0.892 against 0.998 in fp32 on this task "
                          "(H100, torch 2.11; bf16 passes the same bar); not yet explained", strict=False)
def test_fp16_keeps_the_fp32_accuracy(task, fp16_run):
    _, fp32 = _purify(task, amp=False)
    assert fp16_run[1]["test_acc"] >= fp32["test_acc"] - 0.03, (fp16_run[1], fp32)


def test_defend_cli_on_cuda(tmp_path):
    from tests.helpers.bb import cli_args, make_record
    from sau_plugin.cli import main

    make_record(tmp_path, "cifar10")
    args = [a if a != "cpu" else "cuda" for a in cli_args(tmp_path, "cifar10", "--amp", "True")]
    assert main(args) == 0
    out = json.loads((tmp_path / "record" / "attack" / "defense" / "sau" / "sau_result.json").read_text())
    assert out["config"]["device"] == "cuda" and out["config"]["amp"] is True


def test_the_core_leaves_cudnn_benchmark_and_runtime_sets_it(task, monkeypatch):
    from sau_plugin import runtime

    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)  # restored after the test
    _purify(task, amp=False)
    assert torch.backends.cudnn.benchmark is False
    assert runtime.configure(torch.device("cuda")).cudnn == "cudnn.benchmark on"
    assert torch.backends.cudnn.benchmark is True
