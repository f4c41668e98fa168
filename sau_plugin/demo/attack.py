"""The offline attack generator: poison the demo MNIST split, train a backdoored model,
and leave a record folder exactly like BackdoorBench's.

    sau-plugin attack --attack badnet [--pratio 0.1] [--target 0] [--epochs N] [--width 16]

writes, under ``<record_dir>`` (default ``sau_demo/record``) and its sibling ``data/``::

    <workspace>/data/mnist/MNIST/raw/*-ubyte          the clean digits (see demo/data.py)
    <workspace>/record/<attack>_demo/attack_result.pt  BackdoorBench's format, poisoned images in the file
                                    attack_df.csv       one row per epoch (BackdoorBench's columns)
                                    attack_df_summary.csv  rows last / valid_max / exist_nan_value
                                    attack_config.yaml  the settings and final figures of this run
                                    info.pickle         dataset, model, attack, pratio, label transform (as BackdoorBench)

Poisoning follows BackdoorBench (``demo/poison.py``). Training: SGD
(momentum 0.9, weight decay 5e-4), one-cycle learning rate peaking at 0.05, batch 128,
BackdoorBench's MNIST augmentation (random crop, padding 4), PreAct-ResNet18 of width 16.

Figures at the defaults (seed 0; 4,000 training / 1,000 test digits; bf16 autocast, the
default where the CPU has native bf16, ``--attack_amp False`` for fp32; training time on an
idle 2-core AVX512-BF16 CPU):

    attack          pratio  epochs  ACC    ASR     R-ACC  time
    badnet          0.10     8      97.20   99.78   0.22   30 s
    blended         0.10     8      97.20  100.00   0.00   33 s
    sig (clean-l.)  0.09     8      96.30   92.56   7.00   32 s
    wanet           0.10    16      97.50   99.00   1.00   64 s
    lf              0.10     8      96.90  100.00   0.00   34 s
    badnet_all2all  0.10    16      98.30   97.10   0.10   65 s
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..backdoorbench.attack_result import save_attack_result
from ..backdoorbench.metric_csv import write_metric_csvs
from ..backdoorbench.transforms import normalization
from ..config.cli import parse_bool
from ..core.perturbation import PixelSpace
from ..core.precision import Precision, choose_precision, upcast
from ..fileio import atomic_save, atomic_write_text
from ..metrics import batches, evaluate_backdoor, evaluate_clean
from ..models import create_model
from .data import DATA_PATH, ensure_mnist
from .poison import ATTACKS, NUM_CLASSES, AttackSettings, poison_test, poison_train

MNIST_SPACE = PixelSpace(*normalization("mnist"))  # BackdoorBench's MNIST normalisation
DEFAULT_RECORD_DIR = "sau_demo/record"


@dataclass
class AttackOutcome:
    folder: Path
    metrics: Dict[str, float]  # last epoch: test_acc, test_asr, test_ra (fractions), ...
    train_time_s: float
    reused: bool = False


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W) -> normalised float (N, 1, H, W), as ToTensor + Normalize(0.5, 0.5)."""
    return MNIST_SPACE.normalize_uint8(torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1))


# ---- training ------------------------------------------------------------------------------------------------------
def train_backdoored(model: nn.Module, x: torch.Tensor, y: torch.Tensor, y_true: torch.Tensor, poisoned: torch.Tensor,
                     evaluate: Callable[[nn.Module], Dict[str, float]], settings: AttackSettings,
                     progress: bool = True, precision: Optional[Precision] = None) -> List[Dict[str, float]]:
    """SGD with a one-cycle learning rate; one history row per epoch in BackdoorBench's columns.

    ``precision``: autocast and memory format of the forward passes (default fp32); the
    model is expected in its memory format already (``Precision.prepare``).
    """
    from tqdm.auto import tqdm

    precision = precision or Precision(dtype=None, channels_last=False)

    gen = torch.Generator().manual_seed(settings.seed)
    steps_per_epoch = math.ceil(len(y) / settings.batch_size)
    opt = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=0.9, nesterov=True,
                          weight_decay=settings.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=settings.lr, total_steps=settings.n_epochs * steps_per_epoch)
    history = []
    bar = tqdm(total=settings.n_epochs * steps_per_epoch, desc=f"attack {settings.attack}", unit="batch",
               disable=not progress, leave=False)
    for _ in range(settings.n_epochs):
        model.train()
        order = torch.randperm(len(y), generator=gen)
        preds = []
        loss_sum = torch.zeros(())  # summed tensor-side: no synchronising .item() per batch
        for i in range(0, len(y), settings.batch_size):
            idx = order[i:i + settings.batch_size]
            with precision.autocast():
                logits = upcast(model(precision.format(random_crop(x[idx], settings.crop_padding, gen))))
            loss = F.cross_entropy(logits, y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            preds.append(logits.detach().argmax(1))
            loss_sum += loss.detach()
            bar.update()
        pred = torch.empty_like(y)
        pred[order] = torch.cat(preds)
        row = {"train_epoch_loss_avg_over_batch": float(loss_sum) / steps_per_epoch,
               "train_acc": _acc(pred, y),
               "train_acc_clean_only": _acc(pred[~poisoned], y[~poisoned]),
               "train_asr_bd_only": _acc(pred[poisoned], y[poisoned]),
               "train_ra_bd_only": _acc(pred[poisoned], y_true[poisoned])}
        row.update(evaluate(model))
        history.append(row)
        bar.set_postfix(acc=f"{row['test_acc']:.3f}", asr=f"{row['test_asr']:.3f}")
    bar.close()
    return history


def random_crop(x: torch.Tensor, padding: int, gen: torch.Generator) -> torch.Tensor:
    """Per-sample random crop of a zero-padded batch (BackdoorBench's RandomCrop(size, padding));
    the padding is black, i.e. a normalised zero pixel."""
    if padding == 0:
        return x
    n, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4, value=float(MNIST_SPACE.normalize(torch.zeros(1, 1, 1, 1))))
    dy, dx = torch.randint(0, 2 * padding + 1, (2, n), generator=gen)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None]  # (n, 1, h, 1): one window per sample, all channels
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :]  # (n, 1, 1, w)
    return padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]


def _acc(pred: torch.Tensor, y: torch.Tensor) -> float:
    return float((pred == y).float().mean()) if len(y) else float("nan")


# ---- the generator ---------------------------------------------------------------------------------------------
def record_name(attack: str) -> str:
    return f"{attack}_demo"


def generate(settings: AttackSettings, record_dir: Path | str = DEFAULT_RECORD_DIR, *, name: Optional[str] = None,
             overwrite: bool = False, progress: bool = True) -> AttackOutcome:
    """Write ``<record_dir>/<name>/`` (default name ``<attack>_demo``); reuse it when the
    same settings produced it before (unless ``overwrite``)."""
    import yaml

    record_dir = Path(record_dir)
    workspace = record_dir.parent  # BackdoorBench reads data_path relative to the folder holding record/
    folder = record_dir / (name or record_name(settings.attack))
    config_file = folder / "attack_config.yaml"
    if not overwrite and (folder / "attack_result.pt").is_file() and config_file.is_file():
        saved = yaml.safe_load(config_file.read_text()) or {}
        if saved.get("settings") == settings.to_dict():
            ensure_mnist(workspace)  # the record is useless without its data: rewrite them if deleted
            if not (folder / "info.pickle").is_file():  # folders written before it existed
                write_info(folder, settings)
            return AttackOutcome(folder, saved.get("metrics", {}), float(saved.get("train_time_s", 0.0)), reused=True)

    train, test = ensure_mnist(workspace)
    images, labels, bd_idx, bd_train = poison_train(train, settings)
    bd_test = poison_test(test, settings)

    torch.manual_seed(settings.seed)
    precision = choose_precision("cpu", settings.amp)
    if precision.dtype is None:  # fp32: the default memory format, so fp32 records stay what they were before bf16
        precision = Precision("cpu", None, channels_last=False, note=precision.note)
    model = precision.prepare(create_model("preactresnet18", NUM_CLASSES, in_channels=1, width=settings.width))
    x, y = to_tensor(images), torch.from_numpy(labels)
    poisoned = torch.zeros(len(y), dtype=torch.bool)
    poisoned[torch.from_numpy(bd_idx)] = True
    x_clean, y_clean = to_tensor(test.images), torch.from_numpy(test.labels)
    x_bd = to_tensor(np.stack([np.asarray(im) for im in bd_test.images]))
    y_bd, y_orig = torch.tensor(bd_test.bd_labels), torch.tensor(bd_test.original_labels)

    def evaluate(m: nn.Module) -> Dict[str, float]:
        clean = evaluate_clean(m, batches(x_clean, y_clean, batch_size=512), precision)
        bd = evaluate_backdoor(m, batches(x_bd, y_bd, y_orig, batch_size=512), precision)
        return {"clean_test_loss_avg_over_batch": clean["clean_test_loss_avg_over_batch"],
                "bd_test_loss_avg_over_batch": bd["bd_test_loss_avg_over_batch"],
                "test_acc": clean["test_acc"], "test_asr": bd["test_asr"], "test_ra": bd["test_ra"]}

    t0 = time.perf_counter()
    history = train_backdoored(model, x, y, torch.from_numpy(train.labels), poisoned, evaluate, settings, progress,
                               precision)
    train_time = time.perf_counter() - t0

    save_attack_result(folder, model_name="preactresnet18", num_classes=NUM_CLASSES, state_dict=model.state_dict(),
                       data_path=DATA_PATH, img_size=(28, 28, 1), clean_data="mnist", bd_test=bd_test, bd_train=bd_train)
    write_metric_csvs(folder, "attack", history)
    write_info(folder, settings)
    metrics = {k: float(v) for k, v in history[-1].items()}
    atomic_write_text(config_file, yaml.safe_dump({"settings": settings.to_dict(), "metrics": metrics,
                                                    "precision": precision.note, "train_time_s": round(train_time, 2)},
                                                   sort_keys=False))
    return AttackOutcome(folder, metrics, train_time)


def write_info(folder: Path, settings: AttackSettings) -> None:
    """``info.pickle`` with the keys BackdoorBench's attacks save there (their arguments) that
    tables and leaderboard rows read: dataset, model, attack, pratio, attack_label_trans."""
    kind = settings.kind
    info = {"dataset": "mnist", "model": "preactresnet18", "attack": settings.attack.replace("_all2all", ""),
            "pratio": settings.poison_ratio, "attack_label_trans": "all2all" if kind.all_to_all else "all2one",
            "attack_target": settings.target}
    atomic_save(folder / "info.pickle", lambda p: torch.save(info, p))


# ---- command line ------------------------------------------------------------------------------------------------
def add_cli(subparsers) -> None:
    p = subparsers.add_parser("attack", help="generate a backdoored MNIST record folder (offline, CPU)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_attack_arguments(p, epochs_flags=("--epochs", "--attack_epochs"))
    p.add_argument("--name", default=None, help="record folder name (default: <attack>_demo)")
    p.add_argument("--overwrite", action="store_true", help="retrain even if the same settings' record exists")
    p.set_defaults(func=_main)


def add_attack_arguments(p: argparse.ArgumentParser, epochs_flags: Tuple[str, ...] = ("--attack_epochs",)) -> None:
    """The generator's flags; the demo keeps ``--epochs`` for SAU, so there it is ``--attack_epochs``."""
    d = AttackSettings()
    p.add_argument("--attack", default=d.attack, choices=list(ATTACKS), help="trigger (default: %(default)s)")
    p.add_argument("--pratio", type=float, default=None,
                   help="poisoning ratio, counted against the whole training set as BackdoorBench does "
                        "(default: per attack, 0.1; sig 0.09)")
    p.add_argument("--target", type=int, default=d.target, help="all-to-one target class (default: %(default)s)")
    p.add_argument(*epochs_flags, dest="attack_epochs", type=int, default=None,
                   help="training epochs (default: per attack)")
    p.add_argument("--width", type=int, default=d.width, help="PreAct-ResNet18 base width (default: %(default)s)")
    p.add_argument("--attack_lr", type=float, default=d.lr, help="peak SGD learning rate (default: %(default)s)")
    p.add_argument("--attack_batch_size", type=int, default=d.batch_size, help="default: %(default)s")
    p.add_argument("--attack_wd", type=float, default=d.weight_decay, help="SGD weight decay (default: %(default)s)")
    p.add_argument("--attack_amp", type=parse_bool, default=d.amp,
                   help="bf16 autocast where the CPU has native bf16, else fp32 (default: %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="poisoning, initialisation and shuffling seed")
    p.add_argument("--record_dir", default=DEFAULT_RECORD_DIR,
                   help="record folder; the data go to its sibling data/ (default: %(default)s)")
    p.add_argument("--no_progress", action="store_true", help="no progress bars")


def settings_from_args(args: argparse.Namespace) -> AttackSettings:
    return AttackSettings(attack=args.attack, pratio=args.pratio, target=args.target, epochs=args.attack_epochs,
                          width=args.width, lr=args.attack_lr, batch_size=args.attack_batch_size,
                          weight_decay=args.attack_wd, seed=args.seed, amp=args.attack_amp)


def _main(args: argparse.Namespace) -> int:
    out = generate(settings_from_args(args), args.record_dir, name=args.name, overwrite=args.overwrite,
                   progress=not args.no_progress)
    m = out.metrics
    how = "reused" if out.reused else f"trained in {out.train_time_s:.1f} s"
    print(f"{out.folder}: ACC {100 * m['test_acc']:.2f}%  ASR {100 * m['test_asr']:.2f}%  "
          f"R-ACC {100 * m['test_ra']:.2f}%  ({how})")
    return 0
