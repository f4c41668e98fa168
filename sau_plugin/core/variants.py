"""Variants of the method (paper Table 5): a name -> (inner attack, outer loss) pair.

The built-in entries are the paper's A+B (``sau``), C+D (``at``), A+D, C+B, fine-tuning
(``ft``), and SAU with the appendix's universal (``sau_universal``, A.4) and targeted
(``sau_targeted``, A.5) shared perturbations. ``sau_universal`` is ``sau`` with
``perturbation: universal``; ``sau_targeted`` is ``sau`` with ``target_label`` required. :func:`register_variant` adds one, after which ``SAUConfig(variant=...)``
accepts its name. ``Unlearner(attack=..., outer_loss=...)`` overrides either piece for one
run without registering anything.

An attack is called as ``attack(images, labels, clean_pred, clean_pred_ref)`` and returns
an object with ``x_adv`` (normalised, detached) and ``steps`` (like :class:`PGDResult`); a
registry entry holds a factory that builds it from an :class:`AttackContext`, because the
attack must use the Unlearner's own (possibly compiled) forwards, precision and generator.
An outer loss is described in :mod:`sau_plugin.core.outer`.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, NamedTuple, Optional, Sequence, Tuple

import torch

from ..errors import ConfigError
from .outer import ATLoss, SARLoss
from .pgd import PGD, SharedPGD
from .precision import Precision
from .targeted import TargetedSharedPGD
from .universal import UniversalPGD, UniversalSharedPGD


class AttackContext(NamedTuple):
    """What an attack factory may use: h and h_bd forwards, the config, the pixel space and
    the generator the loop shares with its shuffling (so runs stay reproducible)."""

    forward: Callable[[torch.Tensor], torch.Tensor]
    forward_ref: Callable[[torch.Tensor], torch.Tensor]
    cfg: Any
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    precision: Precision
    generator: torch.Generator
    parallel: Optional[Any] = None  # a DataParallel when the batch is split over processes (core/parallel.py)


def _pgd_kwargs(ctx: AttackContext) -> dict:
    cfg = ctx.cfg
    return dict(bound=cfg.trigger_norm, norm=cfg.norm_type, step_size=cfg.adv_lr, steps=cfg.adv_steps,
                init=cfg.pgd_init, mean=ctx.mean, std=ctx.std, precision=ctx.precision, generator=ctx.generator)


def _target(ctx: AttackContext) -> Optional[int]:
    """``target_label`` as an int, None when untargeted; 'estimate' must be resolved by the caller."""
    target = getattr(ctx.cfg, "target_label", None)
    if target is None:
        return None
    if str(target) == "estimate":
        raise ConfigError("target_label 'estimate' needs the clean data: resolve it first (sau_plugin.core."
                          "estimate_target, as run_defense does) and pass the estimated integer")
    return int(target)


def shared_pgd(ctx: AttackContext, *, universal: Optional[bool] = None) -> SharedPGD:
    """A: shared adversarial examples (eqs. 10-11); one perturbation per batch with ``perturbation:
    universal`` (appendix A.4), pushed toward ``target_label`` when it is set (appendix A.5)."""
    if universal is None:
        universal = getattr(ctx.cfg, "perturbation", "sample") == "universal"
    if universal and ctx.parallel is not None:  # its gradient would need a sum over the ranks' samples
        raise ConfigError("perturbation universal runs in one process only; leave out torchrun / a GPU list, "
                          "or use perturbation sample")
    all_ranks = ctx.parallel.all if ctx.parallel is not None else None
    kw = dict(beta_1=ctx.cfg.beta_1, beta_2=ctx.cfg.beta_2, all_ranks=all_ranks, **_pgd_kwargs(ctx))
    target = _target(ctx)
    if target is not None:
        if universal:
            raise ConfigError("a targeted universal perturbation is not implemented; use target_label with "
                              "perturbation sample, or perturbation universal without target_label")
        return TargetedSharedPGD(ctx.forward, ctx.forward_ref, target=target, **kw)
    return (UniversalSharedPGD if universal else SharedPGD)(ctx.forward, ctx.forward_ref, **kw)


def universal_shared_pgd(ctx: AttackContext) -> SharedPGD:
    """A over one perturbation shared by the batch and kept between batches (appendix A.4)."""
    return shared_pgd(ctx, universal=True)


def targeted_shared_pgd(ctx: AttackContext) -> SharedPGD:
    """A toward the target label (appendix A.5); needs ``target_label``."""
    if getattr(ctx.cfg, "target_label", None) is None:
        raise ConfigError("variant sau_targeted needs target_label: a class index, or 'estimate'")
    return shared_pgd(ctx)


def pgd(ctx: AttackContext) -> PGD:
    """C: vanilla PGD on the purified model (one perturbation per batch with ``perturbation: universal``)."""
    if getattr(ctx.cfg, "target_label", None) is not None:
        raise ConfigError(f"target_label applies to the shared inner maximisation (A); variant "
                          f"{ctx.cfg.variant!r} uses vanilla PGD (C)")
    universal = getattr(ctx.cfg, "perturbation", "sample") == "universal"
    if universal and ctx.parallel is not None:
        raise ConfigError("perturbation universal runs in one process only; leave out torchrun / a GPU list, "
                          "or use perturbation sample")
    return (UniversalPGD if universal else PGD)(ctx.forward, **_pgd_kwargs(ctx))


class Variant(NamedTuple):
    name: str
    inner: Optional[str]  # label of the inner maximisation: "shared" (A), "pgd" (C), None (no attack)
    outer: str  # label of the outer minimisation: "sar" (B), "at" (D), "ft" (clean term only)
    make_attack: Optional[Callable[[AttackContext], Any]]
    outer_loss: Optional[Callable[..., Dict[str, torch.Tensor]]]
    paper: str = ""


VARIANTS: Dict[str, Variant] = {}
VARIANT_ALIASES: Dict[str, str] = {}


def register_variant(name: str, make_attack: Optional[Callable[[AttackContext], Any]],
                     outer_loss: Optional[Callable[..., Dict[str, torch.Tensor]]], *, inner: Optional[str] = None,
                     outer: Optional[str] = None, paper: str = "", aliases: Sequence[str] = ()) -> Variant:
    """Add a variant under ``name`` (lower case); refused if the name or an alias is taken.

    ``make_attack(ctx)`` builds the attack, ``None`` for none (then ``outer_loss`` must be
    ``None`` too: the clean term alone). ``inner`` / ``outer`` are labels for logs.
    """
    name = name.strip().lower()
    if (make_attack is None) != (outer_loss is None):
        raise ConfigError(f"variant {name!r}: an inner attack needs an outer loss on x~ and vice versa "
                          f"(both None is fine-tuning)")
    for key in (name, *aliases):
        if key.lower() in VARIANTS or key.lower() in VARIANT_ALIASES:
            raise ConfigError(f"variant name {key!r} is taken; registered: {', '.join(VARIANTS)}")
    if inner is None and make_attack is not None:
        inner = getattr(make_attack, "__name__", type(make_attack).__name__)
    if outer is None:
        outer = "ft" if outer_loss is None else getattr(outer_loss, "name", type(outer_loss).__name__)
    variant = Variant(name, inner, outer, make_attack, outer_loss, paper)
    VARIANTS[name] = variant
    for alias in aliases:
        VARIANT_ALIASES[alias.lower()] = name
    return variant


def canonical_variant(name: str) -> str:
    low = name.strip().lower()
    return VARIANT_ALIASES.get(low, low)


def get_variant(name: str) -> Variant:
    try:
        return VARIANTS[canonical_variant(name)]
    except KeyError:
        raise ConfigError(f"variant must be one of {', '.join(VARIANTS)}; got {name!r}") from None


register_variant("sau", shared_pgd, SARLoss(), inner="shared", paper="A+B", aliases=("a+b",))
register_variant("at", pgd, ATLoss(), inner="pgd", paper="C+D", aliases=("c+d", "vanilla_at"))
register_variant("ft", None, None, paper="FT", aliases=("finetune", "fine-tuning"))
register_variant("a+d", shared_pgd, ATLoss(), inner="shared", paper="A+D")
register_variant("c+b", pgd, SARLoss(), inner="pgd", paper="C+B")
register_variant("sau_universal", universal_shared_pgd, SARLoss(), inner="shared-universal", paper="A.4",
                 aliases=("sau-universal", "sau_uap"))
register_variant("sau_targeted", targeted_shared_pgd, SARLoss(), inner="shared-targeted", paper="A.5",
                 aliases=("sau-targeted",))
