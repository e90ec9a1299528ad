"""KL modifiers: warm-up, beta and free bits on the latent sites' KL terms.

Every objective in :mod:`pyro_deepgen.infer` reduces a batch to per-datapoint
log weights :math:`\\log w = \\log p(x|z) + \\sum_j (\\log p(z_j) - \\log q(z_j|x))`,
a sum over the latent *units* ``j`` (the elements of each latent site's
event; a site that does not factorize, such as a flow, is one unit).
A :class:`KLSchedule` replaces it by

.. math:: \\log \\tilde w = \\log p(x|z) + \\sum_j c_j\\,(\\log p(z_j) - \\log q(z_j|x))
          - \\beta_t \\lambda\\, \\#\\{j : c_j = 0\\},

with :math:`c_j = \\beta_t` (the warm-up factor times beta), or :math:`c_j = 0`
for a unit whose KL, averaged over the batch, is below the free-bits
threshold :math:`\\lambda`. The likelihood term is never touched, and score
terms keep their unit weight, so every estimator stays an estimator of the
modified objective's gradient.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from pyro.infer import ELBO, Trace_ELBO, TraceMeanField_ELBO
from torch.distributions import kl_divergence

from pyro_deepgen.infer.path import path_log_prob
from pyro_deepgen.infer.weights import Layout, LogWeights, factorized, flatten_units

__all__ = ["KLSchedule", "SHAPES", "paired_units", "unit_kl", "with_kl"]

SHAPES = ("linear", "sigmoid")


@dataclass(frozen=True)
class KLSchedule:
    r"""Scales or clamps the KL contribution of the latent sites.

    * ``warmup``: the factor on the KL rises from 0 at step 0 to 1 at step
      ``warmup``, linearly or along a logistic curve (Bowman et al., "Generating
      Sentences from a Continuous Space", 2016, arXiv:1511.06349; Sønderby et al.,
      "Ladder Variational Autoencoders", 2016, arXiv:1602.02282).
    * ``beta``: a constant factor (Higgins et al., "beta-VAE: Learning Basic
      Visual Concepts with a Constrained Variational Framework", ICLR 2017).
    * ``free_bits``: a unit whose KL, averaged over the batch and particles, is
      below this many nats contributes the constant ``free_bits`` instead, so
      its KL gets no gradient (Kingma et al., "Improved Variational Inference
      with Inverse Autoregressive Flow", 2016, arXiv:1606.04934).

    Example:
        >>> from pyro_deepgen.infer import IWAE, with_kl
        >>> objective = with_kl(IWAE(num_particles=1), KLSchedule(warmup=1000, free_bits=0.5))
        >>> KLSchedule(warmup=4).factor(1)
        0.25
    """

    beta: float = 1.0
    warmup: int = 0
    shape: str = "linear"
    free_bits: float = 0.0

    def __post_init__(self) -> None:
        if not (isinstance(self.beta, (int, float)) and math.isfinite(self.beta) and self.beta >= 0):
            raise ValueError(f"beta must be a finite number >= 0; got {self.beta!r}")
        if not (isinstance(self.free_bits, (int, float)) and math.isfinite(self.free_bits)
                and self.free_bits >= 0):
            raise ValueError(f"free bits must be a finite number of nats >= 0; got {self.free_bits!r}")
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0:
            raise ValueError(f"the KL warm-up must be an integer number of steps >= 0; got {self.warmup!r}")
        if self.shape not in SHAPES:
            raise ValueError(f"unknown warm-up shape {self.shape!r}; valid: {', '.join(SHAPES)}")

    @property
    def is_identity(self) -> bool:
        return self.beta == 1 and self.warmup == 0 and self.free_bits == 0

    def factor(self, step: int) -> float:
        """``beta`` times the warm-up factor before training step ``step`` (from 0)."""
        if self.warmup == 0 or step >= self.warmup:
            return float(self.beta)
        t = step / self.warmup
        if self.shape == "sigmoid":  # logistic on [-6, 6], rescaled to run from 0 to 1
            lo, hi = _sigmoid(-6.0), _sigmoid(6.0)
            t = (_sigmoid(12.0 * t - 6.0) - lo) / (hi - lo)
        return float(self.beta) * t

    def apply(self, w: LogWeights, step: int, analytic: bool = False) -> LogWeights:
        """``w`` with its log weights modified as the module docstring says.

        :param analytic: use the closed-form KL of each unit where
            ``torch.distributions.kl_divergence`` has one (``TraceMeanField_ELBO``'s
            estimator; one particle only).
        """
        if self.is_identity and not analytic:
            return w
        if len(w.pieces) > 1:
            raise ValueError("a KL schedule needs the particles in one vectorized plate; this model's "
                             "particles run one at a time (vectorize_particles=False, or its "
                             "vectorized run failed)")
        c = self.factor(step)
        layout = w.layout
        removed = torch.zeros(())  # subtracted from log w
        constant = 0.0
        factors: list[tuple[dict, torch.Tensor, torch.Tensor]] = []  # guide site, c_j, log q_j
        for name, ms in w.model_trace.nodes.items():
            if ms["type"] != "sample" or ms["is_observed"] or name not in w.guide_trace.nodes:
                continue
            gs = w.guide_trace.nodes[name]
            if self.free_bits > 0 and name in w.global_sites():
                raise ValueError(f"free bits hold each datapoint's KL per unit above a threshold, but the "
                                 f"latent site {name!r} is outside the data plate; use warm-up or beta")
            lp, lq = paired_units(layout, ms, gs)
            diff = lp - lq  # log p(z_j) - log q(z_j|x), (k, units, latent units)
            target = diff
            if analytic:
                kl = unit_kl(gs["fn"], ms["fn"])
                if kl is not None and kl.shape[-1] == lp.shape[-1]:
                    target = -layout.tensor(gs, kl, 1)
            coef = torch.full(diff.shape[-1:], c, device=diff.device, dtype=diff.dtype)
            if self.free_bits > 0:
                below = (-target.detach()).mean((0, 1)) < self.free_bits
                coef = torch.where(below, torch.zeros_like(coef), coef)
                constant += c * self.free_bits * int(below.sum())
            removed = removed + (diff - coef * target).sum(-1)
            if not analytic:
                factors.append((gs, coef, lq))
        shift = removed + constant

        def path_adjust() -> torch.Tensor:
            if analytic:
                raise ValueError("path-derivative gradients (STL, DReG) need Monte Carlo KL terms")
            total = torch.zeros(())
            for gs, coef, lq in factors:
                lq_path = layout.site_units(gs, log_prob=path_log_prob)
                if lq_path.shape[-1] != lq.shape[-1]:  # paired_units took the site as one unit
                    lq_path = lq_path.sum(-1, keepdim=True)
                total = total + ((1 - coef) * (lq_path - lq)).sum(-1)
            return total

        uniform = all(bool((coef == c).all()) for _, coef, _ in factors)
        return w.replace(log_p=w.log_p - shift, path_adjust=path_adjust,
                         kl_factor=c if uniform else None, signal_shift=-shift.detach())


def paired_units(layout: Layout, model_site: dict, guide_site: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """``log p`` and ``log q`` of a latent site per latent unit, ``(k, units, latent
    units)`` each; one unit for the whole site when the two do not factorize alike
    (e.g. a flow guide against a factorized prior)."""
    lp, lq = layout.site_units(model_site), layout.site_units(guide_site)
    if lp.shape[-1] != lq.shape[-1]:
        lp, lq = lp.sum(-1, keepdim=True), lq.sum(-1, keepdim=True)
    return lp, lq


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def unit_kl(q, p) -> torch.Tensor | None:
    """Closed-form KL per unit (event elements flattened), or ``None``."""
    (q, rq), (p, rp) = factorized(q), factorized(p)
    if rq != rp:
        return None
    try:
        kl = kl_divergence(q, p)
    except NotImplementedError:
        return None
    return flatten_units(kl, rq)


def with_kl(objective: ELBO, schedule: KLSchedule | None) -> ELBO:
    """A copy of ``objective`` with ``schedule`` applied to its latent sites' KL
    terms (``objective`` itself is left as it was).

    Pyro's ``Trace_ELBO`` becomes the equivalent ``IWAE(num_particles=1)``
    and ``TraceMeanField_ELBO`` the same with closed-form KL terms, since a
    schedule needs the per-datapoint terms that pyro_deepgen's objectives keep.
    """
    from pyro_deepgen.infer.iwae import IWAE
    from pyro_deepgen.infer.objective import Objective

    if schedule is None or schedule.is_identity:
        return objective
    analytic = False
    if isinstance(objective, TraceMeanField_ELBO):
        objective, analytic = IWAE(num_particles=1, max_plate_nesting=objective.max_plate_nesting), True
    elif type(objective) is Trace_ELBO:
        if objective.num_particles > 1:  # Trace_ELBO averages its particles' ELBOs
            raise ValueError("a KL schedule with Trace_ELBO(num_particles > 1) is not supported; "
                             "use Trace_ELBO() or pyro_deepgen.infer.STL(num_particles)")
        objective = IWAE(num_particles=1, max_plate_nesting=objective.max_plate_nesting)
    if not isinstance(objective, Objective):
        raise ValueError(f"a KL schedule needs one of pyro_deepgen.infer's objectives, Trace_ELBO or "
                         f"TraceMeanField_ELBO; got {type(objective).__name__}")
    if schedule.free_bits > 0 and getattr(objective, "gradient", None) == "dreg":
        raise ValueError("free bits with DReG gradients is not supported: DReG's weights need one KL "
                         "factor for all units; use iwae-K or a warm-up/beta schedule")
    objective = copy.copy(objective)
    objective._nesting, objective._sequential = {}, {}
    objective.kl = schedule
    objective.kl_analytic = analytic
    return objective
