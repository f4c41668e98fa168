"""SAU as a BackdoorBench defense: ``run_defense``, the ``sau`` class, ``sau-plugin defend``.

Reads ``<record_dir>/<result_file>/attack_result.pt`` safely, rebuilds the clean subset
and the test sets as tensors, runs the core's :class:`~sau_plugin.core.Unlearner`, and
writes BackdoorBench's outputs to ``<record_dir>/<result_file>/defense/<defense_name>/``:
``defense_result.pt``, ``<name>_df.csv`` (one row per epoch 0, 1, ..., as BackdoorBench's
sau.py), ``<name>_df_summary.csv``, the two plots, ``sau_result.json`` (with the no-defense
figures), ``log/<timestamp>.log``, ``log/index.txt`` and
``checkpoint/last.pt`` (rewritten atomically after every epoch; ``--resume`` continues
from it bit for bit). ``defense_result.pt`` is written last, so a failed run leaves none.
"""

from __future__ import annotations

import argparse
import copy
import logging
import logging.handlers
import math
import os
import platform
import random
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

from .. import __version__, runtime
from ..compat import require_compile
from ..config import LOADERS, LR_SCHEDULER_STEPPINGS, SAUConfig, VARIANTS, load_yaml_mapping
from ..core import Callback, Unlearner
from ..errors import ConfigError, DatasetError, DeviceError, OutputError, SAUError
from ..fileio import atomic_write_text
from ..metrics import der, evaluate_backdoor, evaluate_clean
from ..models import create_model, infer_model_kwargs, load_weights
from . import checkpoint
from .loaders import LoadedData, eval_tensors, load_data
from .record import AttackRecord, read_attack_result, rename_by_position
from .results import (LOSS_COLUMNS, metrics_frame, plot_metrics, read_attack_summary, summary_frame, write_csv,
                      write_defense_result, write_json)
from .transforms import normalization, normalize, normalized_batches, stack_images

log = logging.getLogger("sau_plugin")
LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}

@dataclass
class DefenseOutcome:
    output_dir: Path  # record/<attack>/defense/<defense_name>/
    before: dict  # no-defense figures: test_acc, test_asr, test_ra (fractions)
    after: dict  # final figures, same keys
    der: float  # percent, eq. (14)
    timings: dict  # seconds per phase
    files: list  # paths written
    model: Optional[nn.Module] = field(default=None, repr=False)  # the purified model


@dataclass(frozen=True)
class _Paths:
    record_dir: Path
    attack_dir: Path
    out: Path
    log: Path
    checkpoint: Path

    @classmethod
    def of(cls, cfg: SAUConfig) -> "_Paths":
        if not cfg.result_file:
            raise ConfigError("no attack given: pass --result_file <folder under --record_dir>")
        record_dir = Path(cfg.record_dir)
        attack_dir = record_dir / cfg.result_file
        out = attack_dir / "defense" / cfg.defense_name
        return cls(record_dir, attack_dir, out, Path(cfg.log) if cfg.log else out / "log",
                   Path(cfg.checkpoint_save) if cfg.checkpoint_save else out / "checkpoint")


# ---- small pieces ------------------------------------------------------------------------------------------

def resolve_device(name: str) -> torch.device:
    """'cpu', 'cuda', 'cuda:N' ('cuda:0,1' uses the first GPU; no DataParallel), 'mps' or 'auto'."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {name} asked for CUDA, but CUDA is not available here (torch "
                              f"{torch.__version__}, {'built without CUDA' if torch.version.cuda is None else 'no GPU visible'}); "
                              f"pass --device cpu")
        index = int(name[5:].split(",")[0]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise DeviceError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) visible")
        return torch.device("cuda", index)
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceError("--device mps asked for, but MPS is not available here; pass --device cpu")
    return torch.device(name)


def choose_clean_indices(n: int, cfg: SAUConfig) -> np.ndarray:
    """BackdoorBench's choose_index: ``--index`` file, else random.seed(seed); random.sample."""
    if cfg.index:
        path = Path(cfg.index)
        if not path.is_file():
            raise DatasetError(f"index file {str(path)!r} not found; pass --index pointing to a text file of sample indices")
        try:
            idx = np.atleast_1d(np.loadtxt(path, dtype=np.int64)).reshape(-1)
        except ValueError as exc:
            raise DatasetError(f"index file {str(path)!r} must hold integers, one per line ({exc})") from None
        if idx.size == 0:
            raise DatasetError(f"index file {str(path)!r} holds no index; list the clean samples to use")
        bad = idx[(idx < 0) | (idx >= n)]
        if bad.size:
            raise DatasetError(f"index file {str(path)!r} has {bad.size} index(es) outside [0, {n}) of the clean "
                               f"training set, e.g. {int(bad[0])}; regenerate it for this dataset")
        return idx
    k = int(n * cfg.ratio)
    if k < 1:
        raise DatasetError(f"ratio {cfg.ratio} of {n} clean training samples selects no sample; "
                           f"use --ratio >= {1 / n:.2g} or --index")
    return np.asarray(random.Random(cfg.random_seed).sample(range(n), k), dtype=np.int64)


def build_model(record: AttackRecord, state_dict: Dict[str, torch.Tensor]) -> nn.Module:
    """The attack's model with its weights (module. stripped, keys renamed by position if needed)."""
    model = create_model(record.model_name, record.num_classes, **infer_model_kwargs(record.model_name, state_dict))
    state_dict = rename_by_position(state_dict, list(model.state_dict()))
    return load_weights(model, state_dict, what=f"the weights in {str(record.path)!r}")


def _check_output(paths: _Paths, cfg: SAUConfig) -> None:
    """Refuse to clobber an earlier result; fail early when the folder cannot be made."""
    if cfg.resume and cfg.overwrite:
        raise ConfigError("--resume and --overwrite exclude each other: continue the earlier run or replace it")
    if paths.out.exists() and any(paths.out.iterdir()) and not (cfg.resume or cfg.overwrite):
        raise OutputError(f"defense output {str(paths.out)!r} exists already; pass --resume to continue that run, "
                          f"--overwrite to replace it, or another --defense_name")
    existing = paths.out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"cannot create the defense output {str(paths.out)!r}: {str(existing)!r} is not a "
                          f"writable folder; fix permissions or choose another --record_dir/--defense_name")


def _make_dirs(paths: _Paths, cfg: SAUConfig) -> None:
    try:
        for d in (paths.out, paths.log, paths.checkpoint):
            d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {str(paths.out)!r} ({exc.strerror}); choose a writable output folder") from None
    if cfg.overwrite:  # an earlier result must not survive a failed re-run
        name = cfg.defense_name
        stale = [paths.out / f for f in ("defense_result.pt", f"{name}_df.csv", f"{name}_df_summary.csv",
                                          f"{name}_acc_like_metric_plots.png", f"{name}_loss_metric_plots.png",
                                          "sau_result.json")] + [paths.checkpoint / "last.pt"]
        for f in stale:
            f.unlink(missing_ok=True)



# datasets whose YAML ships with the plugin (BackdoorBench's config/defense/sau/<dataset>.yaml)
SHIPPED_DATASET_CONFIGS = ("cifar10", "cifar100", "gtsrb", "tiny")


def config_dir() -> Path:
    """The shipped YAML files (``defense_configs/sau``; packaged as ``sau_plugin/configs``)."""
    here = Path(__file__).resolve().parents[1]
    for cand in (here / "configs", here.parent / "defense_configs" / "sau"):
        if (cand / "config.yaml").is_file():
            return cand
    raise ConfigError("the plugin's YAML configs are missing from this installation; pass --yaml_path")


# ---- logging and progress ----------------------------------------------------------------------------------

class _LogSession:
    """Log records are buffered until the log folder exists (inputs are checked before
    anything is written), then go to ``log/<timestamp>.log``; with ``console`` also to stderr."""

    FORMAT = logging.Formatter("%(asctime)s [%(levelname)-8s] [%(name)s] %(message)s", "%Y-%m-%d:%H:%M:%S")

    def __init__(self, console: bool, level: str = "info"):
        self.buffer = logging.handlers.MemoryHandler(capacity=1 << 20, flushLevel=logging.CRITICAL + 1)
        self.handlers: List[logging.Handler] = [self.buffer]
        if console:
            stream = logging.StreamHandler(sys.stderr)
            stream.setFormatter(self.FORMAT)
            self.handlers.append(stream)
        self.level = log.level
        log.setLevel(LOG_LEVELS[level])
        for h in self.handlers:
            log.addHandler(h)
        self.file: Optional[Path] = None

    def to_file(self, log_dir: Path) -> Path:
        self.file = log_dir / (time.strftime("%Y_%m_%d_%H_%M_%S", time.localtime()) + ".log")
        handler = logging.FileHandler(self.file)
        handler.setFormatter(self.FORMAT)
        self.buffer.setTarget(handler)
        self.buffer.flush()
        log.removeHandler(self.buffer)
        log.addHandler(handler)
        self.handlers.append(handler)
        return self.file

    def close(self) -> None:
        for h in self.handlers:
            log.removeHandler(h)
            h.close()
        log.setLevel(self.level)


class TqdmProgress(Callback):
    """One progress bar per epoch on stderr, a tick per batch."""

    def __init__(self, enabled: bool = True):
        self.enabled, self.bar = enabled, None

    def on_epoch_start(self, u: Unlearner, epoch: int, n_batches: int) -> None:
        from tqdm import tqdm

        done = u.progress.next_batch if u.progress is not None else 0  # resumed mid-epoch
        self.bar = tqdm(total=n_batches, initial=done, desc=f"SAU epoch {epoch + 1}/{u.cfg.n_rounds}", unit="batch",
                        disable=not self.enabled, leave=False, file=sys.stderr)

    def on_batch_end(self, u: Unlearner, epoch: int, batch: int, stats: Dict[str, float]) -> None:
        self.bar.update(1)
        if self.bar.n >= self.bar.total:  # closed before the epoch's evaluation and log line
            self.on_fit_end(u, False)

    def on_fit_end(self, u: Unlearner, stopped: bool) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# ---- the run ---------------------------------------------------------------------------------------------------

def run_defense(cfg: SAUConfig, *, progress: bool = True, log_level: str = "info",
                record: Optional[AttackRecord] = None, callbacks: Sequence[Callback] = ()) -> DefenseOutcome:
    """Run SAU on ``<cfg.record_dir>/<cfg.result_file>`` and write BackdoorBench's outputs.

    Every input is read and checked before the output folder is created; errors are
    :class:`~sau_plugin.errors.SAUError` subclasses with a one-line message.
    ``log_level`` ``debug`` adds shared PGD's per-batch diagnostics to the log. ``record``:
    that folder's attack result when the caller has read it already. ``callbacks`` are passed
    to ``Unlearner.fit`` after the progress bar (see ``sau_plugin.core.callbacks``).
    """
    session = _LogSession(console=progress, level=log_level)
    try:
        return _run(cfg, progress, session, record, callbacks)
    finally:
        session.close()


def _check_labels(labels: np.ndarray, num_classes: int, where: str) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DatasetError(f"{where} has labels outside [0, {num_classes}) of the attacked model; "
                           f"the dataset does not match the attack result")


@dataclass
class _Inputs:
    """Everything read from disk, as tensors: test images uint8 (normalised per batch),
    the clean subset already normalised (the Unlearner holds it on the device)."""

    record: AttackRecord
    data: LoadedData
    model: nn.Module
    mean: tuple
    std: tuple
    test: Tuple[torch.Tensor, torch.Tensor]  # images, labels
    bd_test: Tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # images, backdoor labels, true labels
    indices: np.ndarray
    clean: Tuple[torch.Tensor, torch.Tensor]


def _load_inputs(cfg: SAUConfig, paths: _Paths, timings: Dict[str, float],
                 record: Optional[AttackRecord] = None) -> _Inputs:
    t = time.perf_counter()
    if record is None or record.path != paths.attack_dir / "attack_result.pt":
        record = read_attack_result(paths.attack_dir, trust_pickle=cfg.trust_pickle)
    if cfg.dataset != record.clean_data:
        raise ConfigError(f"--dataset {cfg.dataset} but the attack result was made on {record.clean_data!r}; "
                          f"pass --dataset {record.clean_data} or leave --dataset out (the record names its dataset)")
    if cfg.model != record.model_name:
        log.warning("config model %r differs from the attack's model %r; using the attack's", cfg.model, record.model_name)
    data = load_data(record, paths.attack_dir, paths.record_dir, cfg.loader)
    model = build_model(record, data.state_dict or record.state_dict)
    mean, std = normalization(record.clean_data)
    h, w, c = record.img_size
    _check_labels(data.clean_train.labels, record.num_classes, data.clean_train.where)
    _check_labels(data.clean_test.labels, record.num_classes, data.clean_test.where)
    test, bd_test = eval_tensors(record, data)
    timings["load"] = time.perf_counter() - t

    t = time.perf_counter()
    indices = choose_clean_indices(len(data.clean_train), cfg)
    clean = (normalize(stack_images((data.clean_train.image(i) for i in indices), (h, w), c), mean, std),
             torch.from_numpy(data.clean_train.labels[indices]))
    timings["clean_subset"] = time.perf_counter() - t
    return _Inputs(record, data, model, mean, std, test, bd_test, indices, clean)


def load_inputs(cfg: SAUConfig) -> _Inputs:
    """Everything a run reads (record, data, model, tensors), checked, without writing anything
    (for benchmarks and notebooks)."""
    return _load_inputs(cfg, _Paths.of(cfg), {})


def _run(cfg: SAUConfig, progress: bool, session: _LogSession, record: Optional[AttackRecord],
         callbacks: Sequence[Callback]) -> DefenseOutcome:
    t_start = time.perf_counter()
    timings: Dict[str, float] = {}
    paths = _Paths.of(cfg)
    device = resolve_device(cfg.device)
    if cfg.compile:
        require_compile()  # before anything is written
    _check_output(paths, cfg)
    inp = _load_inputs(cfg, paths, timings, record)  # nothing is written before the inputs pass
    ckpt = paths.checkpoint / "last.pt"
    resume_state = checkpoint.read(ckpt, cfg, inp.indices) if cfg.resume and ckpt.is_file() else None

    _make_dirs(paths, cfg)
    log_file = session.to_file(paths.log)
    rec, data = inp.record, inp.data
    log.info("sau_plugin %s, %s defense of %s (%s, %s, %d classes), loader %s, device %s", __version__, cfg.variant,
             paths.attack_dir, rec.model_name, rec.clean_data, rec.num_classes, data.loader, device)
    log.info("clean subset %d of %d; clean test %d; poisoned test %d", len(inp.indices), len(data.clean_train),
             len(data.clean_test), len(data.bd_test))
    log.info("config: %s", cfg.to_dict())
    index_file = paths.log / "index.txt"
    atomic_write_text(index_file, "".join(f"{int(i)}\n" for i in inp.indices))  # np.savetxt(fmt='%d')

    notes = runtime.configure(device, cpu_heap_reuse=cfg.cpu_heap_reuse)
    model = inp.model.to(device).eval()  # DefenseOutcome.model is handed back in eval mode
    unlearner = Unlearner(model, copy.deepcopy(model), cfg, mean=inp.mean, std=inp.std, copy_ref=False)
    log.info("precision: %s; runtime: %s", unlearner.precision.note, notes)

    def evaluate(net: nn.Module) -> Dict[str, float]:
        kw = dict(mean=inp.mean, std=inp.std, batch_size=cfg.batch_size, device=device)
        out = evaluate_clean(net, normalized_batches(*inp.test, **kw), unlearner.precision)
        out.update(evaluate_backdoor(net, normalized_batches(*inp.bd_test, **kw), unlearner.precision))
        return out

    timings["initial_eval"] = 0.0
    if resume_state is not None:
        initial = checkpoint.restore(resume_state, ckpt, unlearner)
        log.info("resumed from %s after epoch %d of %d", ckpt, unlearner.epoch, cfg.n_rounds)
    else:
        if cfg.resume:
            log.info("--resume: no checkpoint at %s, starting from the beginning", ckpt)
        t = time.perf_counter()
        initial = evaluate(unlearner.model)  # no defense: in sau_result.json, not in <name>_df.csv
        timings["initial_eval"] = time.perf_counter() - t
    log.info("no defense: %s", _figures(initial))

    name = cfg.defense_name
    spent = {"unlearn": 0.0, "eval": 0.0, "write": 0.0}

    def on_epoch_end(u: Unlearner, row: Dict[str, float]) -> None:
        t0 = time.perf_counter()
        spent["unlearn"] += row.get("time_unlearn_s", 0.0)
        spent["eval"] += row.get("time_eval_s", 0.0)
        checkpoint.save(ckpt, u, initial, inp.indices, cfg)
        write_csv(metrics_frame(u.history), paths.out / f"{name}_df.csv")
        plot_metrics(u.history, paths.out, name)
        spent["write"] += time.perf_counter() - t0
        log.info("epoch %d/%d: %s, train loss %.4f", u.epoch, cfg.n_rounds, _figures(row), row.get("train_loss", math.nan))

    try:
        fitted = unlearner.fit(*inp.clean, evaluate=evaluate, on_epoch_end=on_epoch_end,
                               callbacks=[TqdmProgress(progress), *callbacks])
    except Exception as exc:
        kept = f": {ckpt}, after epoch {unlearner.epoch}" if ckpt.is_file() else ""
        log.error("stopped: %s%s", exc, kept)
        if kept and hasattr(exc, "exit_code"):  # say where the last good state is
            raise type(exc)(f"{exc}{kept}") from None
        raise
    if fitted.stopped and unlearner.epoch < cfg.n_rounds:  # a partial run is no result
        p = unlearner.progress
        where = f"epoch {unlearner.epoch + 1} batch {p.next_batch}" if p is not None else f"epoch {unlearner.epoch}"
        kept = f"; {ckpt} holds epoch {unlearner.epoch}, rerun with --resume" if ckpt.is_file() else ""
        log.error("stopped by a callback after %s%s", where, kept)
        raise SAUError(f"stopped by a callback after {where}; no result written{kept}")
    timings.update(unlearn=spent["unlearn"], eval=spent["eval"], write=spent["write"])
    files = [index_file, log_file, ckpt]
    return _write_final(cfg, paths, inp, unlearner, initial, timings, t_start, files, device, notes)


def _write_final(cfg: SAUConfig, paths: _Paths, inp: _Inputs, unlearner: Unlearner, initial: dict,
                 timings: Dict[str, float], t_start: float, files: List[Path], device: torch.device,
                 notes: runtime.RuntimeNotes) -> DefenseOutcome:
    """csv, summary, plots and sau_result.json; defense_result.pt last, so a failed run leaves none.

    With no epoch run (``n_rounds: 0``) there is no row to write: no csv, summary or plot
    (BackdoorBench's sau.py writes no ``sau_df.csv`` either); ``final`` = ``no_defense``.
    """
    t = time.perf_counter()
    name, rec = cfg.defense_name, inp.record
    rows = unlearner.history
    written: List[Path] = []
    if rows:
        df = metrics_frame(rows)
        df_path, summary_path = paths.out / f"{name}_df.csv", paths.out / f"{name}_df_summary.csv"
        write_csv(df, df_path)
        write_csv(summary_frame(df), summary_path)
        written = [df_path, summary_path, *plot_metrics(rows, paths.out, name)]
    before, after = _figures(initial), _figures(rows[-1] if rows else initial)
    der_pct = der(before["test_acc"], before["test_asr"], after["test_acc"], after["test_asr"])
    result_path, defense_path = paths.out / "sau_result.json", paths.out / "defense_result.pt"
    files = [*written, result_path, defense_path, *files]
    timings["write"] += time.perf_counter() - t
    timings["total"] = time.perf_counter() - t_start
    write_json(result_path, {
        "defense": name, "variant": cfg.variant, "attack": cfg.result_file, "attack_dir": str(paths.attack_dir),
        "model_name": rec.model_name, "num_classes": rec.num_classes, "dataset": rec.clean_data,
        "no_defense": before, "no_defense_losses": {k: float(initial[k]) for k in LOSS_COLUMNS}, "final": after,
        "der": der_pct, "epochs_run": unlearner.epoch, "n_clean": len(inp.indices), "n_test": len(inp.data.clean_test),
        "n_bd_test": len(inp.data.bd_test), "loader": inp.data.loader, "device": str(device),
        "precision": unlearner.precision.note, "allocator": notes.allocator, "timings_s": timings,
        "versions": _versions(),
        "attack_summary": read_attack_summary(paths.attack_dir / "attack_df_summary.csv"),
        "config": cfg.to_dict(), "files": [str(f) for f in files],
    })
    write_defense_result(defense_path, rec.model_name, rec.num_classes, unlearner.model.state_dict())
    log.info("final: %s, DER %.2f%%; wrote %s", after, der_pct, paths.out)
    return DefenseOutcome(paths.out, before, after, der_pct, timings, files, unlearner.model)


def _figures(row: dict) -> Dict[str, float]:
    return {k: float(row[k]) for k in ("test_acc", "test_asr", "test_ra")}


def _versions() -> Dict[str, str]:
    import pandas
    import PIL

    return {"sau_plugin": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "pandas": pandas.__version__, "pillow": PIL.__version__}


# ---- BackdoorBench's defense interface --------------------------------------------------------------------------

class sau:  # noqa: N801 - BackdoorBench names a defense class after its script
    """BackdoorBench's defense interface: ``sau(args).defense(result_file)``.

    ``args`` is an argparse namespace built with :meth:`add_arguments`; the YAML at
    ``--yaml_path`` is merged under the values given on the command line.
    """

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.cfg = config_from_args(args)
        self.progress = not getattr(args, "no_progress", False)
        self.log_level = getattr(args, "log_level", None) or "info"
        self.outcome: Optional[DefenseOutcome] = None
        if self.cfg.result_file:
            self.set_result(self.cfg.result_file)

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        add_arguments(parser)

    def set_result(self, result_file: str) -> None:
        """Point at ``record/<result_file>``; folders are created by the run, once inputs are checked."""
        self.cfg = self.cfg.replace(result_file=result_file)
        paths = _Paths.of(self.cfg)
        self.attack_file, self.save_path = paths.attack_dir, paths.out

    def set_logger(self) -> None:
        """Logging is set up by the run (log/<timestamp>.log, and stderr when progress is on)."""

    def mitigation(self) -> dict:
        self.cfg, record = dataset_from_record(self.args, self.cfg)
        self.outcome = run_defense(self.cfg, progress=self.progress, log_level=self.log_level, record=record)
        return {"model": self.outcome.model}

    def defense(self, result_file: str) -> dict:
        self.set_result(result_file)
        self.set_logger()
        return self.mitigation()


# ---- command line -------------------------------------------------------------------------------------------------

def _bool(text: str) -> bool:
    low = str(text).strip().lower()
    if low in ("true", "1", "yes"):
        return True
    if low in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every flag of BackdoorBench's defense/sau.py (same names; None = take the YAML's value),
    with its type slips fixed (client_optimizer is a name, steplr_milestones a list of ints),
    plus the plugin's flags."""
    a = parser.add_argument
    a("--device", type=str, help="cpu, cuda, cuda:N or auto")
    a("-pm", "--pin_memory", type=_bool, help="accepted for compatibility")
    a("-nb", "--non_blocking", type=_bool, help="accepted for compatibility")
    a("-pf", "--prefetch", type=_bool, help="accepted for compatibility")
    a("--amp", type=_bool, help="bf16/fp16 autocast where the hardware supports it")
    a("--checkpoint_load", type=str, help="accepted for compatibility (use --resume)")
    a("--checkpoint_save", type=str, help="checkpoint folder (default <output>/checkpoint)")
    a("--log", type=str, help="log folder (default <output>/log)")
    a("--dataset_path", type=str, help="accepted for compatibility; data is found from the attack result")
    a("--dataset", type=str, help="mnist, cifar10, cifar100, gtsrb, tiny (default: the one the attack result "
                                     "names; without --yaml_path, that dataset's shipped YAML)")
    a("--result_file", type=str, help="attack folder under --record_dir")
    a("--epochs", type=int, help="unlearning epochs when --n_rounds is not given")
    a("--batch_size", type=int)
    a("--num_workers", type=float, help="accepted for compatibility")
    a("--lr", type=float)
    a("--lr_scheduler", type=str, help="CosineAnnealingLR, StepLR, MultiStepLR, CyclicLR, ReduceLROnPlateau or none; "
      "as in the reference, never stepped (constant lr) unless --lr_scheduler_stepping epoch")
    a("--steplr_stepsize", type=int)
    a("--steplr_gamma", type=float)
    a("--steplr_milestones", type=int, nargs="+")
    a("--model", type=str, help="informational: the attack result names the model")
    a("--client_optimizer", type=str, help="adam or sgd")
    a("--sgd_momentum", type=float)
    a("--wd", type=float, help="weight decay")
    a("--frequency_save", type=int, help="accepted for compatibility (a checkpoint is kept every epoch)")
    a("--random_seed", type=int)
    a("--yaml_path", type=str, help="defaults, e.g. defense_configs/sau/cifar10.yaml (default: the plugin's YAML for "
                                    "the dataset, else its config.yaml)")
    a("--ratio", type=float, help="fraction of the clean training set used")
    a("--index", type=str, help="text file of clean training indices (overrides --ratio)")
    a("--optim", type=str, help="accepted for compatibility (client_optimizer chooses)")
    a("--n_rounds", type=int, help="unlearning epochs")
    a("--outer_steps", type=int)
    a("--lmd_1", type=float, help="weight of L_cl")
    a("--lmd_2", type=float, help="weight of L_at (0: off)")
    a("--lmd_3", type=float, help="weight of L_sar")
    a("--beta_1", type=float, help="weight of L_adv")
    a("--beta_2", type=float, help="weight of L_share")
    a("--trigger_norm", type=float, help="perturbation bound")
    a("--pgd_init", type=str, help="zero, random, max or min")
    a("--norm_type", type=str, help="L_inf, L2, L1 or Reg (no projection)")
    a("--adv_lr", type=float, help="PGD step size")
    a("--adv_steps", type=int, help="PGD steps")
    a("--train_mode", action="store_true", default=None, help="BatchNorm in train mode during the outer step")
    g = parser.add_argument_group("sau_plugin")
    g.add_argument("--record_dir", type=str, help="folder holding the attack folders (default: record)")
    g.add_argument("--defense_name", type=str, help="output folder and file prefix (default: sau)")
    g.add_argument("--variant", type=str, help=f"{', '.join(VARIANTS)} (paper Table 5; sau = A+B, at = C+D)")
    g.add_argument("--loader", type=str, choices=LOADERS, help="where the data come from (default: auto)")
    g.add_argument("--trust_pickle", action="store_true", default=None,
                   help="load attack_result.pt with weights_only=False (runs any code in it)")
    g.add_argument("--resume", action="store_true", default=None, help="continue from checkpoint/last.pt")
    g.add_argument("--overwrite", action="store_true", default=None, help="replace an existing defense output")
    g.add_argument("--lr_scheduler_stepping", type=str, choices=LR_SCHEDULER_STEPPINGS,
                   help="never (default, as the reference: constant lr) or epoch (step --lr_scheduler once per epoch; "
                        "cosine over n_rounds)")
    g.add_argument("--compile", action="store_true", default=None, help="torch.compile the models")
    g.add_argument("--cpu_heap_reuse", type=_bool, help="CPU: keep freed activation memory in the heap "
                   "instead of page-faulting it anew every batch (glibc; default true; no effect on results)")
    g.add_argument("--no_progress", action="store_true", help="no progress bars or log lines on stderr")
    g.add_argument("--log_level", choices=tuple(LOG_LEVELS), default="info",
                   help="debug adds shared PGD's per-batch diagnostics (fooled / shared counts, losses, eps norms)")


def config_from_args(args: argparse.Namespace, dataset: Optional[str] = None) -> SAUConfig:
    """YAML defaults under the explicit flags; an explicit --epochs sets n_rounds unless given.

    ``dataset`` (the record's, used when --dataset is absent) sets the dataset and, without
    --yaml_path, picks that dataset's shipped YAML (``config.yaml`` for a dataset without one).
    """
    known = {f.name for f in fields(SAUConfig)}
    values = {k: v for k, v in vars(args).items() if k in known and v is not None}
    if values.get("epochs") is not None and values.get("n_rounds") is None:
        values["n_rounds"] = values["epochs"]
    if dataset is not None and "dataset" not in values:
        values["dataset"] = dataset
    if getattr(args, "yaml_path", None):
        yaml_path = Path(args.yaml_path)
    else:
        shipped = config_dir() / f"{values.get('dataset')}.yaml"
        yaml_path = shipped if values.get("dataset") in SHIPPED_DATASET_CONFIGS else config_dir() / "config.yaml"
    load_yaml_mapping(yaml_path)  # clear error for a missing or broken file before merging
    return SAUConfig.from_yaml(yaml_path, overrides=values)


def dataset_from_record(args: argparse.Namespace, cfg: SAUConfig) -> Tuple[SAUConfig, Optional[AttackRecord]]:
    """Without --dataset the attack result names the dataset: read it (once; the run reuses
    it) and rebuild the configuration with that dataset and its YAML."""
    if getattr(args, "dataset", None) is not None or not cfg.result_file:
        return cfg, None
    record = read_attack_result(_Paths.of(cfg).attack_dir, trust_pickle=cfg.trust_pickle)
    if getattr(args, "yaml_path", None):
        written_for = load_yaml_mapping(args.yaml_path).get("dataset")
        if written_for not in (None, record.clean_data):
            log.warning("%s sets dataset %r, but the attack result was made on %r: using %r with that YAML's other "
                        "values", args.yaml_path, written_for, record.clean_data, record.clean_data)
    return config_from_args(args, dataset=record.clean_data).replace(result_file=cfg.result_file), record


def _cli(args: argparse.Namespace) -> int:
    cfg, record = dataset_from_record(args, config_from_args(args))
    outcome = run_defense(cfg, progress=not args.no_progress, log_level=args.log_level, record=record)
    b, a = outcome.before, outcome.after
    print(f"no defense: ACC {100 * b['test_acc']:.2f} ASR {100 * b['test_asr']:.2f} R-ACC {100 * b['test_ra']:.2f}")
    print(f"{args.defense_name or 'sau'}: ACC {100 * a['test_acc']:.2f} ASR {100 * a['test_asr']:.2f} "
          f"R-ACC {100 * a['test_ra']:.2f} DER {outcome.der:.2f}")
    print(f"results in {outcome.output_dir}")
    return 0


def add_cli(subparsers) -> None:
    p = subparsers.add_parser("defend", help="run SAU on a BackdoorBench attack result",
                              description="Shared Adversarial Unlearning on record/<result_file>/attack_result.pt; "
                                          "writes record/<result_file>/defense/<defense_name>/.")
    add_arguments(p)
    p.set_defaults(func=_cli)
