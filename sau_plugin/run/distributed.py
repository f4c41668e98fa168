"""One defense run over several processes: torchrun's environment, BackdoorBench's
``--device cuda:0,1`` (the plugin starts one worker per GPU itself), errors decided by all
ranks together, and the rule that rank 0 alone writes files and logs.

The method's side is :class:`sau_plugin.core.parallel.DataParallel`; this module only sets
up the process group around it:

* ``torchrun --nproc_per_node N -m sau_plugin defend ...`` (``WORLD_SIZE`` > 1 in the
  environment): NCCL on CUDA, each rank on the GPU of its ``LOCAL_RANK`` (or the
  ``LOCAL_RANK``-th of ``--device cuda:i,j,...``); gloo on the CPU.
* ``--device cuda:0,1`` without torchrun: checked (CUDA present, enough GPUs), then one
  process per listed GPU on this machine, rendezvous on a free local port, through the
  same code path; the calling process waits and hands back rank 0's outcome.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator, List, Optional, TypeVar

import torch
import torch.distributed as dist

from ..core import DataParallel
from ..errors import ConfigError, DeviceError, SAUError
from .. import errors as errors_module
from .inputs import resolve_device

T = TypeVar("T")


def world_size_from_env() -> int:
    """The group size torchrun (or :func:`spawn`) gave this process; 1 when run alone."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ConfigError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} in the environment is not a number; "
                          f"launch with torchrun or unset it") from None


def gpu_list(name: str) -> Optional[List[int]]:
    """``cuda:0,1`` -> [0, 1]; None for any other device name (one device)."""
    if not name.startswith("cuda:") or "," not in name:
        return None
    try:
        ids = [int(part) for part in name[5:].split(",")]
    except ValueError:
        raise ConfigError(f"--device {name}: expected cuda:N or a list like cuda:0,1") from None
    if len(set(ids)) != len(ids) or min(ids) < 0:
        raise ConfigError(f"--device {name}: each GPU index once, none negative (e.g. cuda:0,1)")
    return ids


def check_gpus(name: str, ids: List[int]) -> None:
    """Refuse a GPU list this machine cannot serve, before any process starts."""
    if not torch.cuda.is_available():
        why = "built without CUDA" if torch.version.cuda is None else "no GPU visible"
        raise DeviceError(f"--device {name} asks for {len(ids)} GPUs, but CUDA is not available here (torch "
                          f"{torch.__version__}, {why}); pass --device cpu, or run on a machine with those GPUs")
    count = torch.cuda.device_count()
    if max(ids) >= count:
        raise DeviceError(f"--device {name} asks for GPU {max(ids)}, but only {count} CUDA device(s) are visible "
                          f"(indices 0..{count - 1}); list visible GPUs only, e.g. --device cuda:0"
                          + (f",{count - 1}" if count > 1 else ""))


def wants_spawn(name: str) -> bool:
    """``--device cuda:i,j,...`` outside torchrun: the plugin starts the workers itself."""
    return gpu_list(name) is not None and world_size_from_env() <= 1 and not initialized()


def initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


@dataclass
class Group:
    """This process's place in the run: its device, and the DataParallel hook (None alone)."""

    device: torch.device
    parallel: Optional[DataParallel] = None
    owned: bool = False  # the group was initialised here: destroyed by close()

    @property
    def is_main(self) -> bool:
        return self.parallel is None or self.parallel.is_main

    @property
    def world_size(self) -> int:
        return 1 if self.parallel is None else self.parallel.world_size

    def agree(self, fn: Callable[[], T]) -> T:
        """``fn()`` on every rank; if it raised a SAUError on any rank, every rank raises the
        error of the lowest such rank (named in the message unless it is rank 0), so the job
        ends together with rank 0 reporting it."""
        if self.parallel is None:
            return fn()
        result, error = None, None
        try:
            result = fn()
        except SAUError as exc:
            error = exc
        failed = [(r, e) for r, e in enumerate(self.parallel.gather(None if error is None else
                                                                    (type(error).__name__, str(error)))) if e]
        if not failed:
            return result
        rank, (kind, message) = failed[0]
        if rank == self.parallel.rank:
            raise error
        cls = getattr(errors_module, kind, SAUError)
        raise cls(message if rank == 0 else f"rank {rank}: {message}")

    def share(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (e.g. the checkpoint to resume from)."""
        return obj if self.parallel is None else self.parallel.broadcast(obj)

    def close(self) -> None:
        if self.owned and initialized():
            dist.destroy_process_group()


def backend() -> str:
    return str(dist.get_backend()) if initialized() else "none"


def join_group(device_name: str) -> Group:
    """The group this process runs in: none alone, the caller's if one is initialised, else
    the one torchrun's environment describes (initialised here)."""
    if initialized():
        return Group(_rank_device(device_name), DataParallel())
    if world_size_from_env() <= 1:
        return Group(resolve_device(device_name))
    device = _rank_device(device_name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Group(device, DataParallel(device=device), owned=True)


def _rank_device(name: str) -> torch.device:
    local = int(os.environ.get("LOCAL_RANK", "0"))
    ids = gpu_list(name)
    if ids is not None:
        check_gpus(name, ids)
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(len(ids))))
        if local_world != len(ids):
            raise ConfigError(f"--device {name} lists {len(ids)} GPUs but this node runs {local_world} processes; "
                              f"list one GPU per process, or pass --device cuda (GPU = LOCAL_RANK)")
        return torch.device("cuda", ids[local])
    device = resolve_device(name)
    if device.type == "cuda" and device.index in (None, 0) and ":" not in name:
        return resolve_device(f"cuda:{local}")  # plain cuda / auto: one GPU per local rank
    return device


# ---- --device cuda:0,1 without torchrun ---------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(target: Callable[..., Any], nprocs: int, *args: Any) -> Any:
    """``target(*args)`` in ``nprocs`` new processes forming one group on this machine (the
    environment torchrun would set); returns what rank 0's call returned. A SAUError of the
    run is raised here with its type and message (one line for the command line)."""
    import torch.multiprocessing as mp

    results = mp.get_context("spawn").SimpleQueue()
    workers = mp.start_processes(_worker, args=(nprocs, free_port(), target, args, results), nprocs=nprocs,
                                 join=False, start_method="spawn")
    with _forwarded_signals(workers.processes):  # a scheduler's SIGTERM reaches the workers (preemption)
        try:
            while not workers.join():
                pass
        except mp.ProcessExitedException as exc:  # killed, or died in native code: no Python error to pass on
            raise SAUError(f"worker process {exc.error_index} of {nprocs} ended with exit code {exc.exit_code}; "
                           f"the others were stopped and no result was written") from None
    if results.empty():
        raise SAUError(f"the {nprocs} worker processes ended without a result")
    kind, value = results.get()
    if kind == "error":
        name, message = value
        raise getattr(errors_module, name, SAUError)(message)
    return value


@contextlib.contextmanager
def _forwarded_signals(processes) -> Iterator[None]:
    def forward(signum, frame):
        for p in processes:
            if p.is_alive():
                os.kill(p.pid, signum)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, forward)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _worker(local_rank: int, nprocs: int, port: int, target: Callable[..., Any], args: tuple, results) -> None:
    os.environ.update(RANK=str(local_rank), LOCAL_RANK=str(local_rank), WORLD_SIZE=str(nprocs),
                      LOCAL_WORLD_SIZE=str(nprocs), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    try:
        value = target(*args)
    except SAUError as exc:  # every rank raises the run's errors together (Group.agree); rank 0 reports
        if local_rank == 0:
            results.put(("error", (type(exc).__name__, str(exc))))
        return
    if local_rank == 0:
        results.put(("ok", value))
