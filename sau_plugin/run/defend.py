"""One defense run: load and check the inputs, fit the Unlearner, write BackdoorBench's outputs.

Every input is read and checked before the output folder is created; ``checkpoint/last.pt``
is rewritten after every epoch, and after the batch at which SIGTERM / SIGINT stopped the run
(:class:`~sau_plugin.errors.Preempted`, exit code 75); ``--resume`` continues from it bit for
bit. Errors are :class:`~sau_plugin.errors.SAUError` subclasses with a one-line message.

Over several processes (torchrun, or ``--device cuda:0,1``; see ``run/distributed.py``) every
rank reads the inputs and runs its share of each batch and of the evaluation; rank 0 alone
checks and writes the output folder, the log and the checkpoint, and hands its checkpoint to
the others on ``--resume``. Errors before unlearning are agreed on by all ranks.
"""

import copy
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Sequence

import torch.nn as nn

from .. import __version__, runtime
from ..backdoorbench.record import AttackRecord
from ..backdoorbench.transforms import normalized_batches
from ..compat import require_compile
from ..config import SAUConfig
from ..core import Callback, Precision, Unlearner
from ..errors import Preempted, SAUError
from ..metrics import der, evaluate_backdoor, evaluate_clean
from ..models import build_model
from ..safeload import load_weights_only
from . import checkpoint, distributed
from .callbacks import PreemptionGuard, TqdmProgress
from .inputs import load_inputs
from .logs import LogSession
from .outputs import OutputDir, figures, no_defense_losses, versions
from .risk_report import RiskProbe, chain_summary, risk_rows, write_risk_files
from .target import resolve_target

log = logging.getLogger("sau_plugin")

@dataclass
class DefenseOutcome:
    output_dir: Path  # record/<attack>/defense/<defense_name>/
    before: dict  # no-defense figures: test_acc, test_asr, test_ra (fractions)
    after: dict  # final figures, same keys
    der: float  # percent, eq. (14)
    timings: dict  # seconds per phase
    files: list  # paths written (none on ranks other than 0)
    model: Optional[nn.Module] = field(default=None, repr=False)  # the purified model
    rank: int = 0  # this process's rank in a run over several processes


def run_defense(cfg: SAUConfig, *, progress: bool = True, log_level: str = "info",
                record: Optional[AttackRecord] = None, callbacks: Sequence[Callback] = ()) -> DefenseOutcome:
    """Run SAU on ``<cfg.record_dir>/<cfg.result_file>`` and write BackdoorBench's outputs.

    ``log_level`` ``debug`` adds shared PGD's per-batch diagnostics to the log. ``record``:
    that folder's attack result when the caller has read it already. ``callbacks`` are passed
    to ``Unlearner.fit`` after the progress bar (see ``sau_plugin.core.callbacks``); a run one
    of them stops writes no result. SIGTERM or SIGINT during unlearning (main thread) stops
    the run after the current batch, saves the checkpoint and raises ``Preempted``.

    Under torchrun, or in a process group the caller initialised, this is one rank of the run
    (its outcome's ``files`` are empty except on rank 0). ``--device cuda:0,1`` outside
    torchrun starts one worker per GPU and returns rank 0's outcome, its model read back
    from ``defense_result.pt`` (``callbacks`` must then be picklable).
    """
    if distributed.wants_spawn(cfg.device):
        ids = distributed.gpu_list(cfg.device)
        distributed.check_gpus(cfg.device, ids)
        return spawn_defense(cfg, len(ids), progress=progress, log_level=log_level, callbacks=callbacks)
    group = distributed.join_group(cfg.device)
    session = LogSession(console=progress and group.is_main, level=log_level)
    try:
        return _run(cfg, progress and group.is_main, session, record, callbacks, group)
    finally:
        session.close()
        group.close()


def spawn_defense(cfg: SAUConfig, nprocs: int, **kwargs) -> DefenseOutcome:
    """``run_defense`` in ``nprocs`` new processes on this machine (one per GPU of
    ``cfg.device``, or gloo on the CPU); rank 0's outcome with the purified model."""
    outcome = distributed.spawn(_rank_outcome, nprocs, cfg, kwargs)
    outcome.model = read_purified(outcome.output_dir / "defense_result.pt")
    return outcome


def _rank_outcome(cfg: SAUConfig, kwargs: dict) -> DefenseOutcome:
    outcome = run_defense(cfg, **kwargs)
    outcome.model = None  # the parent reads defense_result.pt
    return outcome


def read_purified(path: Path) -> nn.Module:
    """The model in a ``defense_result.pt`` (on the CPU, eval mode)."""
    saved = load_weights_only(path, "defense_result.pt", "rerun the defense")
    return build_model(saved["model_name"], saved["num_classes"], saved["model"], what=f"the weights in {str(path)!r}").eval()


def _run(cfg: SAUConfig, progress: bool, session: LogSession, record: Optional[AttackRecord],
         callbacks: Sequence[Callback], group: "distributed.Group") -> DefenseOutcome:
    t_start = time.perf_counter()
    timings: Dict[str, float] = {}
    out = OutputDir.of(cfg)
    device, main, parallel = group.device, group.is_main, group.parallel

    def check_and_load():  # nothing is written before the inputs pass, on every rank
        if cfg.compile:
            require_compile()
        if main:
            out.check(cfg)
        inp = load_inputs(cfg, record=record, timings=timings)
        if parallel is not None:
            parallel.check_run(cfg, len(inp.indices))
        ckpt = out.checkpoint
        return inp, (checkpoint.read(ckpt, cfg, inp.indices) if main and cfg.resume and ckpt.is_file() else None)

    inp, resume_state = group.agree(check_and_load)
    resume_state = group.share(resume_state)  # rank 0's checkpoint: the others may not see its disk
    rec, data = inp.record, inp.data

    def prepare():  # rank 0's folder; the others wait for it, and fail with it
        if not main:
            return None, None
        out.prepare(overwrite=cfg.overwrite)
        return session.to_file(out.log), out.write_index(inp.indices)

    log_file, index_file = group.agree(prepare)
    log.info("sau_plugin %s, %s defense of %s (%s, %s, %d classes), loader %s, device %s%s", __version__, cfg.variant,
             out.attack_dir, rec.model_name, rec.clean_data, rec.num_classes, data.loader, device,
             f", {group.world_size} processes ({distributed.backend()})" if parallel else "")
    log.info("clean subset %d of %d; clean test %d; poisoned test %d", len(inp.indices), len(data.clean_train),
             len(data.clean_test), len(data.bd_test))
    log.info("config: %s", cfg.to_dict())
    log.info("inner maximisation: %s, %s perturbation%s", cfg.inner, cfg.perturbation,
             f", target label {cfg.target_label}" if cfg.target_label is not None else "")

    notes = runtime.configure(device, cpu_heap_reuse=cfg.cpu_heap_reuse)  # process-wide: the run's job, not the core's
    model = inp.model.to(device).eval()  # DefenseOutcome.model is handed back in eval mode
    method_cfg, target = resolve_target(cfg, model, *inp.clean, inp.mean, inp.std, Precision(dtype=None, channels_last=False))
    unlearner = Unlearner(model, copy.deepcopy(model), method_cfg, mean=inp.mean, std=inp.std, copy_ref=False,
                          parallel=parallel)
    log.info("precision: %s; runtime: %s", unlearner.precision.note, notes)
    probe = (RiskProbe(unlearner.model_ref, cfg, inp.test, inp.bd_test, data.bd_test.original_index, inp.mean,
                       inp.std, unlearner.precision, device, None if target is None else target["used"])
             if cfg.risk_every else None)

    def evaluate(net: nn.Module) -> Dict[str, float]:
        kw = dict(mean=inp.mean, std=inp.std, batch_size=cfg.batch_size, device=device)
        share = (lambda n: None) if parallel is None else (lambda n: parallel.batch_starts(n, cfg.batch_size))
        result = evaluate_clean(net, normalized_batches(*inp.test, **kw, starts=share(len(inp.test[1]))),
                                unlearner.precision, parallel=parallel)
        result.update(evaluate_backdoor(net, normalized_batches(*inp.bd_test, **kw, starts=share(len(inp.bd_test[1]))),
                                        unlearner.precision, parallel=parallel))
        if probe is not None and unlearner.epoch % cfg.risk_every == 0:  # epoch 0: before unlearning
            result.update(probe(net))
        return result

    timings["initial_eval"] = 0.0
    if resume_state is not None:
        initial = checkpoint.restore(resume_state, out.checkpoint, unlearner)
        batch = f", batch {unlearner.progress.next_batch} of epoch {unlearner.epoch + 1}" if unlearner.progress else ""
        log.info("resumed from %s after epoch %d of %d%s", out.checkpoint, unlearner.epoch, cfg.n_rounds, batch)
    else:
        if cfg.resume:
            log.info("--resume: no checkpoint at %s, starting from the beginning", out.checkpoint)
        t = time.perf_counter()
        initial = evaluate(unlearner.model)  # no defense: in sau_result.json, not in <name>_df.csv
        timings["initial_eval"] = time.perf_counter() - t
    log.info("no defense: %s", figures(initial))

    spent = {"unlearn": 0.0, "eval": 0.0, "write": 0.0}

    def on_epoch_end(u: Unlearner, row: Dict[str, float]) -> None:
        t0 = time.perf_counter()
        spent["unlearn"] += row.get("time_unlearn_s", 0.0)
        spent["eval"] += row.get("time_eval_s", 0.0)
        if main:
            checkpoint.save(out.checkpoint, u, initial, inp.indices, cfg)
            out.write_epoch(u.history)
        spent["write"] += time.perf_counter() - t0
        log.info("epoch %d/%d: %s, train loss %.4f", u.epoch, cfg.n_rounds, figures(row), row.get("train_loss", math.nan))

    guard = PreemptionGuard()  # SIGTERM / SIGINT: stop after the batch, checkpoint, exit 75
    try:
        fitted = unlearner.fit(*inp.clean, evaluate=evaluate, on_epoch_end=on_epoch_end,
                               callbacks=[TqdmProgress(progress), guard, *callbacks])
    except Exception as exc:
        kept = f": {out.checkpoint}, after epoch {unlearner.epoch}" if out.checkpoint.is_file() else ""
        log.error("stopped: %s%s", exc, kept)
        if kept and hasattr(exc, "exit_code"):  # say where the last good state is
            raise type(exc)(f"{exc}{kept}") from None
        raise
    finally:
        if parallel is not None:  # before run_defense destroys the group, also when an error propagates
            parallel.release(unlearner)
    if fitted.stopped and unlearner.epoch < cfg.n_rounds:  # a partial run is no result
        p = unlearner.progress
        where = f"epoch {unlearner.epoch + 1} batch {p.next_batch}" if p is not None else f"epoch {unlearner.epoch}"
        signalled = guard.signal is not None
        if parallel is not None:  # the stop was collective; was it a signal on some rank?
            signalled = parallel.any(signalled)
        if signalled:  # the progress of a stopped epoch is in the checkpoint too
            if main:
                checkpoint.save(out.checkpoint, unlearner, initial, inp.indices, cfg)
            n_batches = -(-len(inp.clean[1]) // cfg.batch_size)
            at = (f"in epoch {unlearner.epoch + 1} of {cfg.n_rounds} after batch {p.next_batch} of {n_batches}"
                  if p is not None else f"after epoch {unlearner.epoch} of {cfg.n_rounds}")
            by = guard.signal_name or "a signal on another rank"
            msg = f"preempted by {by} {at}; no result written; checkpoint {out.checkpoint}; rerun with --resume"
            log.error("%s", msg)
            raise Preempted(msg)
        kept = f"; {out.checkpoint} holds epoch {unlearner.epoch}, rerun with --resume" if out.checkpoint.is_file() else ""
        log.error("stopped by a callback after %s%s", where, kept)
        raise SAUError(f"stopped by a callback after {where}; no result written{kept}")
    timings.update(unlearn=spent["unlearn"], eval=spent["eval"], write=spent["write"])
    before, after = figures(initial), figures(unlearner.history[-1] if unlearner.history else initial)
    der_pct = der(before["test_acc"], before["test_asr"], after["test_acc"], after["test_asr"])
    if not main:  # rank 0 writes the results
        return DefenseOutcome(out.out, before, after, der_pct, timings, [], unlearner.model, parallel.rank)

    # csv, summary, plots and sau_result.json; defense_result.pt last, so a failed run leaves none.
    t = time.perf_counter()
    rows = unlearner.history
    written = out.write_tables(rows)  # with no epoch run (n_rounds 0): none, and final = no_defense
    risks = risk_rows(initial, rows) if probe is not None else []
    form = cfg.perturbation + (f", target {method_cfg.target_label}" if method_cfg.target_label is not None else "")
    written += write_risk_files(risks, *out.risk_files, f"{cfg.variant} ({form} perturbation) on {cfg.result_file}")
    files = [*written, out.result_json, out.defense_result, index_file, log_file, out.checkpoint]
    timings["write"] += time.perf_counter() - t
    timings["total"] = time.perf_counter() - t_start
    out.write_result_json({
        "defense": cfg.defense_name, "variant": cfg.variant, "attack": cfg.result_file,
        "attack_dir": str(out.attack_dir), "model_name": rec.model_name, "num_classes": rec.num_classes,
        "dataset": rec.clean_data, "no_defense": before, "no_defense_losses": no_defense_losses(initial),
        "final": after, "der": der_pct, "epochs_run": unlearner.epoch, "n_clean": len(inp.indices),
        "n_test": len(data.clean_test), "n_bd_test": len(data.bd_test), "loader": data.loader, "device": str(device),
        "processes": group.world_size, "precision": unlearner.precision.note, "allocator": notes.allocator,
        "timings_s": timings,
        "versions": versions(), "attack_summary": out.attack_summary(), "config": cfg.to_dict(),
        "files": [str(f) for f in files],
        **({"target_label": target} if target is not None else {}),
        **({"risk_chain": chain_summary(risks)} if risks else {}),
    })
    if risks:
        log.info("risk chain (Proposition 3): %s", chain_summary(risks))
    out.write_model(rec.model_name, rec.num_classes, unlearner.model)
    log.info("final: %s, DER %.2f%%; wrote %s", after, der_pct, out.out)
    return DefenseOutcome(out.out, before, after, der_pct, timings, files, unlearner.model)
