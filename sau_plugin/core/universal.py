"""Universal shared perturbation (paper appendix A.4): one eps for every image.

A.4 bounds the backdoor risk of a fixed additive trigger (Assumption A.4.1, g(x; Delta) =
x + Delta) by the universal sub-adversarial risk

    R_usub = 1/|D_-y^| max_{eps in S} sum_i { 1[x_i in D_s] 1[h(x_i + eps) = h_bd(x_i + eps) != y_i]
                                              + 1[x_i in D_-y^ \\ D_s] 1[h(x_i + eps) != y_i] },

i.e. one eps maximises the shared objective summed over the whole clean set. Here that eps is
a single (1, C, H, W) tensor broadcast over the batch, moved by the same masked shared
objective (eqs. 10-11) and projected onto the same set S; the outer step unlearns the x + eps
it gives with L_sar as usual.

Persistence: the perturbation is carried over from batch to batch and from epoch to epoch
(each call starts from where the previous one ended; only a new run starts from ``init``).
The maximum in R_usub is over the sum over all N samples, so a batch's few PGD steps refine a
running estimate of that one eps instead of restarting it on every batch (i-BAU, which unlearns
a universal perturbation, also optimises it over many batches). It is part of the Unlearner's
state (``state_dict``), so a resumed run continues bit for bit.
"""

from __future__ import annotations

from typing import Optional

import torch

from .perturbation import init_perturbation
from .pgd import PGD, PGDResult, SharedPGD


class UniversalMixin:
    """Makes a PGD class optimise one perturbation shared by the batch, kept between calls."""

    pert: Optional[torch.Tensor] = None

    def _start(self, images: torch.Tensor):
        x01 = self.space.denormalize(images).detach()
        if self.pert is None:
            self.pert = init_perturbation(x01[:1], self.init, self.norm, self.bound, self.generator)
        return x01, self.pert.to(x01).detach().clone()

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, *args, **kwargs) -> PGDResult:
        result = super().__call__(images, labels, *args, **kwargs)
        self.pert = result.pert
        return result

    def state_dict(self) -> dict:
        return {"pert": None if self.pert is None else self.pert.detach().cpu().clone()}

    def load_state_dict(self, state: dict) -> None:
        pert = state.get("pert")
        self.pert = None if pert is None else pert.clone()


class UniversalSharedPGD(UniversalMixin, SharedPGD):
    """Shared PGD (eqs. 10-11) over one perturbation broadcast over the batch (appendix A.4).

    Same arguments as :class:`~sau_plugin.core.pgd.SharedPGD`. ``result.pert`` has shape
    (1, C, H, W); the early stop still waits until every sample of the batch is shared.

    Examples::
        >>> attack = UniversalSharedPGD(model, backdoored, bound=0.2, step_size=0.2)
        >>> res = attack(images, labels)   # res.pert.shape == (1, *images.shape[1:])
    """


class UniversalPGD(UniversalMixin, PGD):
    """Vanilla PGD on h (variant C) over one perturbation broadcast over the batch."""
