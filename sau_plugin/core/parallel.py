"""Data parallelism for one SAU run: each global batch split over the processes of a
``torch.distributed`` group, with the same numbers as one process running the whole batch.

:class:`DataParallel` is the hook ``Unlearner(parallel=...)`` takes; the caller initialises
the process group (``torch.distributed.init_process_group``; the command line does it from
torchrun's environment, see ``sau_plugin.run.distributed``). What it changes, and why the
result equals the single-process run's:

* Every rank shuffles the whole clean subset with the same seeded generator and takes a
  contiguous slice of each global batch (``torch.tensor_split``: with a remainder, the
  first ranks get one sample more; a rank may get none when a batch is smaller than the
  group; an empty slice runs empty tensors and adds nothing, where torch can: see
  :meth:`DataParallel.check_run`).
* Outer step (eq. 13): the purified model is wrapped in ``DistributedDataParallel``, which
  averages gradients over ranks; each rank's loss is its mean over its slice times
  ``n_rank * world / n_batch``, so the averaged gradient is that of the global batch's
  mean (the clean and AT terms are means, L_sar is a sum divided by the batch size).
* BatchNorm: fixed in PGD and, unless ``train_mode``, in the outer step (no statistics to
  share). With ``train_mode`` the outer step's batch statistics are computed over the
  whole global batch by :func:`batch_stats_over_group` (``nn.SyncBatchNorm`` refuses CPU
  tensors, so the same computation is written here once for gloo and NCCL).
* Shared PGD's early stop ("every sample is shared") is decided over the global batch.
* The frozen backdoored model is not wrapped: each rank keeps its own copy.

Float sums run in another order than in one process (the gradient all-reduce, batch
statistics, per-sample work at another batch size), so weights agree to rounding, not bitwise.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
from typing import Any, Iterator, List, Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn as nn

from ..errors import ConfigError

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class DataParallel:
    """The process group a run is split over: this rank, the group size, and the few
    collectives the loop needs. Build it after ``torch.distributed.init_process_group``.

    ``device``: where collective tensors live (the rank's GPU for NCCL); by default the
    current CUDA device for NCCL, the CPU otherwise.

    Examples::
        >>> torch.distributed.init_process_group("gloo")  # env:// from torchrun
        >>> u = Unlearner(model, backdoored, cfg, parallel=DataParallel())
    """

    def __init__(self, group: Optional[Any] = None, *, device: Optional[torch.device] = None):
        if not (dist.is_available() and dist.is_initialized()):
            raise ConfigError("DataParallel needs an initialised process group: call "
                              "torch.distributed.init_process_group first (torchrun sets its environment)")
        self.group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        if device is None:
            nccl = dist.get_backend(group) == "nccl"
            device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")
        self.device = torch.device(device)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ---- data --------------------------------------------------------------------------------
    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous slice of a global batch (sizes differ by at most one)."""
        return torch.tensor_split(batch, self.world_size)[self.rank]

    def step(self, u, images: torch.Tensor, labels: torch.Tensor, ref_pred: torch.Tensor,
             batch: torch.Tensor) -> dict:
        """``u.step`` on this rank's slice of the global ``batch`` (indices); returns the global
        batch's figures (per-rank means weighted by slice size, summed over ranks)."""
        local = self.shard(batch)
        n, b = local.shape[0], batch.shape[0]
        u.loss_scale = n * self.world_size / b  # DDP averages: world * (slice sum / b) per rank
        u.local_empty = n == 0
        stats = u.step(images[local], labels[local], ref_pred[local])
        keys = sorted(stats)
        sums = self.sum([stats[k] * n if n else 0.0 for k in keys])  # an empty slice's means are NaN
        return {k: s / b for k, s in zip(keys, sums)}

    def check_run(self, cfg, n: int) -> None:
        """Refuse what a split run cannot do alike on every rank: ``pgd_init`` random (one draw
        per slice), and a smallest global batch that leaves a rank without samples on a torch
        that cannot run an empty batch (torch 1.x: channels_last convolutions)."""
        if cfg.pgd_init == "random":
            raise ConfigError("pgd_init 'random' is not supported across processes (each would draw its own noise); "
                              "use max, min or zero, or run one process")
        batch_size = cfg.batch_size
        smallest = n % batch_size or batch_size
        if 0 < n and smallest < self.world_size and not empty_batches_run():
            raise ConfigError(f"with {self.world_size} processes the global batch of {smallest} sample(s) (the last of "
                              f"{n} clean samples in batches of {batch_size}) leaves a process without samples, which "
                              f"torch {torch.__version__} cannot run; choose batch_size so that {n} % batch_size is 0 "
                              f"or at least {self.world_size}, or use fewer processes")

    def batch_starts(self, n: int, batch_size: int) -> range:
        """Start indices of the fixed-size batches of ``n`` samples this rank evaluates
        (batch ``rank``, ``rank + world``, ...): whole batches, as one process cuts them."""
        return range(self.rank * batch_size, n, self.world_size * batch_size)

    @staticmethod
    def release(u) -> None:
        """Drop ``u``'s DistributedDataParallel wrapper (``u.forward_outer`` becomes the plain
        forward). Call it before ``destroy_process_group``: on torch 1.x a wrapper that outlives
        the group can deadlock the process when it is freed."""
        u.ddp, u.forward_outer = None, u.forward
        gc.collect()

    # ---- collectives -------------------------------------------------------------------------------
    def sum(self, values: Sequence[float]) -> List[float]:
        """Element-wise sum over ranks, in float64."""
        t = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        dist.all_reduce(t, group=self.group)
        return t.tolist()

    def any(self, flag: bool) -> bool:
        return self.sum([float(bool(flag))])[0] > 0

    def all(self, flag: bool) -> bool:
        return self.sum([float(bool(flag))])[0] == self.world_size

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (pickled)."""
        box = [obj]
        dist.broadcast_object_list(box, src=dist.get_global_rank(self.group, 0) if self.group else 0,
                                   group=self.group)
        return box[0]

    def gather(self, obj: Any) -> List[Any]:
        """Every rank's ``obj``, in rank order, on every rank (pickled)."""
        out: List[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj, group=self.group)
        return out

    # ---- the model -----------------------------------------------------------------------------------
    def wrap(self, model: nn.Module) -> nn.Module:
        """``DistributedDataParallel`` for the outer step: gradients averaged over ranks.
        Buffers are not broadcast at each forward: they stay equal on every rank (fixed
        BatchNorm, or statistics over the whole group)."""
        ddp = nn.parallel.DistributedDataParallel
        # newer torch renames broadcast_buffers (same meaning here: buffers are synced once, at init)
        no_sync = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(ddp).parameters else "broadcast_buffers"
        return ddp(model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                   process_group=self.group, **{no_sync: False})


def empty_batches_run() -> bool:
    """Whether this torch runs a channels_last convolution on an empty batch (1.11 does not)."""
    cl = torch.channels_last
    try:
        torch.nn.functional.conv2d(torch.zeros(0, 2, 4, 4).contiguous(memory_format=cl),
                                   torch.zeros(2, 2, 3, 3).contiguous(memory_format=cl), padding=1)
        return True
    except RuntimeError:
        return False


class _SumOverRanks(torch.autograd.Function):
    """all_reduce(SUM) with its gradient: the backward sums the incoming gradients too."""

    @staticmethod
    def forward(ctx, tensor, group):
        ctx.group = group
        tensor = tensor.clone()
        dist.all_reduce(tensor, group=group)
        return tensor

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


def _global_batch_norm(bn: nn.Module, x: torch.Tensor, group) -> torch.Tensor:
    """BatchNorm in training mode with mean and (biased) variance of the batch over all ranks,
    running statistics updated as ``F.batch_norm`` does (unbiased variance, momentum or
    cumulative average)."""
    dims = [0] + list(range(2, x.dim()))
    shape = [1, -1] + [1] * (x.dim() - 2)
    xf = x.to(torch.promote_types(x.dtype, torch.float32))  # half inputs (autocast): statistics in float32
    local = torch.cat([xf.sum(dims), xf.new_tensor([x.numel() // max(1, x.shape[1])])])
    summed = _SumOverRanks.apply(local, group)
    count = summed[-1].detach()
    mean = summed[:-1] / count
    centred = xf - mean.view(shape)
    var = _SumOverRanks.apply((centred * centred).sum(dims), group) / count
    y = centred * torch.rsqrt(var.view(shape) + bn.eps)
    if bn.affine:
        y = y * bn.weight.view(shape) + bn.bias.view(shape)
    if bn.track_running_stats:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            m = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
            unbiased = var.detach() * (count / (count - 1).clamp(min=1))
            bn.running_mean.mul_(1 - m).add_(mean.detach().to(bn.running_mean.dtype), alpha=m)
            bn.running_var.mul_(1 - m).add_(unbiased.to(bn.running_var.dtype), alpha=m)
    return y.to(x.dtype)


@contextlib.contextmanager
def batch_stats_over_group(model: nn.Module, parallel: DataParallel) -> Iterator[None]:
    """For the duration, BatchNorm layers of ``model`` in training mode normalise with the
    statistics of the batch over all ranks (as ``nn.SyncBatchNorm``, CPU included); in eval
    mode they run as before. Parameter and buffer names are unchanged (state_dicts, checkpoints)."""
    patched = [m for m in model.modules() if isinstance(m, BATCH_NORMS)]
    for bn in patched:
        plain = bn.forward
        bn.forward = (lambda x, bn=bn, plain=plain:  # noqa: E731 - one closure per layer
                      _global_batch_norm(bn, x, parallel.group) if bn.training else plain(x))
    try:
        yield
    finally:
        for bn in patched:
            del bn.forward  # the class's forward again
