"""Spawn targets of the distributed tests (importable, so that ``torch.multiprocessing.spawn``
children find them): one small SAU run, on one process or split over a gloo group."""

from __future__ import annotations

import copy
import os
from typing import Dict, Optional

import torch
import torch.distributed as dist
import torch.nn as nn

from sau_plugin import ConfigError, NonFiniteLossError, SAUConfig, Unlearner
from sau_plugin.core import AttackContext, Callback, DataParallel, Precision, get_variant
from sau_plugin.metrics import batches, evaluate_backdoor, evaluate_clean

K, H = 5, 8
TARGET = 0


def _cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, K)).double()


def _data(n: int, seed: int, trigger: bool = False):
    """Class prototypes plus noise (normalised), optionally with a +-0.5 blended pattern."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.randn(K, 3, H, H, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = torch.randint(0, K, (n,), generator=g)
    x = protos[y] + 0.8 * torch.randn(n, 3, H, H, generator=g, dtype=torch.float64)
    if trigger:
        x = x + 0.5 * torch.randn(1, 3, H, H, generator=torch.Generator().manual_seed(7), dtype=torch.float64).sign()
    return x, y


def make_models(path: str) -> None:
    """h_bd: trained on data where 15% carry the pattern and label TARGET; h: h_bd a few
    steps on clean data. Saved once, so that every process starts from the same weights."""
    torch.manual_seed(0)
    x, y = _data(300, 1)
    xp, _ = _data(45, 2, trigger=True)
    x, y = torch.cat([x, xp]), torch.cat([y, torch.full((45,), TARGET)])
    model_ref = _cnn()
    opt = torch.optim.Adam(model_ref.parameters(), 1e-2)
    for _ in range(6):
        perm = torch.randperm(len(y))
        for i in range(0, len(y), 32):
            opt.zero_grad()
            nn.functional.cross_entropy(model_ref(x[perm[i:i + 32]]), y[perm[i:i + 32]]).backward()
            opt.step()
    model = copy.deepcopy(model_ref)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    xc, yc = _data(100, 3)
    for _ in range(5):
        opt.zero_grad()
        nn.functional.cross_entropy(model(xc), yc).backward()
        opt.step()
    torch.save({"model": model.state_dict(), "model_ref": model_ref.state_dict()}, path)


def run(spec: Dict, models: str, parallel: Optional[DataParallel] = None) -> Dict:
    """One run of ``spec`` (``n`` clean samples, SAUConfig fields in ``cfg``) from the weights
    in ``models``. Returns the history and the final weights."""
    torch.set_num_threads(1)
    saved = torch.load(models)
    model, model_ref = _cnn(), _cnn()
    model.load_state_dict(saved["model_ref" if spec.get("h_is_h_bd") else "model"])
    model_ref.load_state_dict(saved["model_ref"])
    x, y = _data(spec["n"], 4)
    xt, yt = _data(23, 5)
    xb, yb = _data(19, 6, trigger=True)
    y_bd = torch.full_like(yb, TARGET)
    cfg = SAUConfig(device="cpu", amp=False, **spec["cfg"])
    u = Unlearner(model, model_ref, cfg, parallel=parallel)

    def evaluate(net):
        bs = 6
        out = evaluate_clean(net, batches(xt, yt, batch_size=bs, parallel=parallel), parallel=parallel)
        out.update(evaluate_backdoor(net, batches(xb, y_bd, yb, batch_size=bs, parallel=parallel), parallel=parallel))
        return out

    res = u.fit(x, y, evaluate=evaluate)
    return {"history": res.history, "state": {k: v.clone() for k, v in u.model.state_dict().items()}}


def early_stop_steps(parallel: Optional[DataParallel] = None) -> int:
    """Shared PGD steps on a global batch of two samples, this rank's slice of it: h = h_bd
    = sign of the first pixel; sample 0 is shared (fooled) at the first step, sample 1 never
    (too far from the boundary). One process runs all 5 steps; so must rank 0, whose slice
    alone is all shared at once."""
    torch.set_num_threads(1)
    net = nn.Sequential(nn.Flatten(), nn.Linear(2, 2, bias=False)).double()
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
    images = torch.tensor([[-0.1, 0.0], [-5.0, 0.0]], dtype=torch.float64).view(2, 1, 1, 2)
    labels = torch.tensor([1, 1])
    cfg = SAUConfig(device="cpu", amp=False, trigger_norm=0.2, adv_lr=0.2, adv_steps=5)
    rows = torch.arange(2) if parallel is None else parallel.shard(torch.arange(2))
    attack = get_variant("sau").make_attack(AttackContext(net, net, cfg.method(), (0.0,), (1.0,),
                                                          Precision(channels_last=False), torch.Generator(), parallel))
    return attack(images[rows], labels[rows]).steps


def rank_main(rank: int, world: int, init_file: str, specs: Dict[str, Dict], models: str, out: str) -> None:
    """``torch.multiprocessing.spawn`` target: every spec on a gloo group of ``world``."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        parallel = DataParallel()
        results = {}
        for name, spec in specs.items():
            try:
                results[name] = run(spec, models, parallel)
            except ConfigError as exc:  # refused alike on every rank (DataParallel.check_run)
                results[name] = {"refused": str(exc)}
        results["early_stop_steps"] = parallel.gather(early_stop_steps(parallel))
        if rank == 0:
            torch.save(results, out)
    finally:
        dist.destroy_process_group()


def agree_main(rank: int, world: int, init_file: str, out: str) -> None:
    """``Group.agree`` where only rank 1's step fails: every rank raises rank 1's error."""
    from sau_plugin.errors import DatasetError
    from sau_plugin.run.distributed import Group

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    group = Group(torch.device("cpu"), DataParallel())

    def step():
        if rank == 1:
            raise DatasetError("clean data not found on this node")
        return "loaded"

    try:
        seen = ("ok", group.agree(step))
    except Exception as exc:  # noqa: BLE001 - recorded for the test
        seen = (type(exc).__name__, str(exc))
    torch.save(seen, f"{out}.{rank}")
    dist.destroy_process_group()


def readme_example_main(rank: int, world: int, port: int, example: str, task: tuple, out: str) -> None:
    """README's Python example for process groups, run as rank ``rank`` of a gloo group (the
    environment torchrun would set), on ``task`` (h_bd, clean x, y, test x, y)."""
    import copy as copy_module

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    model_ref, x_clean, y_clean, x_test, y_test = task
    ns = dict(model=copy_module.deepcopy(model_ref), model_ref=model_ref, x_clean=x_clean, y_clean=y_clean,
              x_test=x_test, y_test=y_test)
    exec(compile(example, "README.md (process groups)", "exec"), ns)
    torch.save(ns["result"].history, f"{out}.{rank}")
    dist.destroy_process_group()


class StopOnOneRank(Callback):
    """Asks to stop after batch ``batch`` on rank ``rank`` only (as a signal one process got)."""

    def __init__(self, rank: int, batch: int):
        self.rank, self.batch = rank, batch

    def should_stop(self, u) -> bool:
        return dist.get_rank() == self.rank and u.progress is not None and u.progress.next_batch == self.batch


def stop_main(rank: int, world: int, init_file: str, spec: Dict, models: str, out: str) -> None:
    """A stop requested on rank 1 alone after batch 2: where each rank's fit ended."""
    from datetime import timedelta

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))
    parallel = DataParallel()
    saved = torch.load(models)
    model, model_ref = _cnn(), _cnn()
    model.load_state_dict(saved["model"])
    model_ref.load_state_dict(saved["model_ref"])
    x, y = _data(spec["n"], 4)
    u = Unlearner(model, model_ref, SAUConfig(device="cpu", amp=False, **spec["cfg"]), parallel=parallel)
    if spec.get("nan_on_rank_1"):  # the outer loss turns NaN on rank 1 alone
        sar = u.outer_loss
        u.outer_loss = lambda *a: {**sar(*a), "loss": sar(*a)["loss"] * (float("nan") if rank == 1 else 1.0)}
    try:
        res = u.fit(x, y, callbacks=[StopOnOneRank(1, 2)])
        seen = (res.stopped, u.epoch, u.progress.next_batch)
    except NonFiniteLossError as exc:
        seen = ("NonFiniteLossError", u.epoch, str(exc).split(";")[0])
    torch.save(seen, f"{out}.{rank}")
    parallel.release(u)  # the DDP wrapper must not outlive the group (torch 1.11 can deadlock freeing it)
    dist.destroy_process_group()
