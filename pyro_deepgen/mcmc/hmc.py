r"""Batched Hamiltonian Monte Carlo: many independent chains in one tensor, one
Metropolis accept/reject per chain.

Hamiltonian Monte Carlo (Duane, Kennedy, Pendleton & Roweth, "Hybrid Monte
Carlo", 1987; Neal, "MCMC using Hamiltonian dynamics", 2011, arXiv:1206.1901)
targets :math:`\pi(z) \propto \exp \log p(z)`: it draws a momentum
:math:`v \sim N(0, I)`, integrates the dynamics of the Hamiltonian
:math:`H(z, v) = -\log p(z) + \tfrac12 |v|^2` with Pyro's leapfrog integrator
(:func:`pyro.ops.integrator.velocity_verlet`) to a proposal :math:`(z', v')`,
and accepts it with probability

.. math:: \alpha = \min\{1, \exp(H(z, v) - H(z', v'))\}.

The integrator is volume preserving and reversible, so the transition leaves
:math:`\pi` invariant. The log density may be any callable: the traced log joint
of a model (MCEM, the MCMC-refined ELBO), or AIS's tempered path
:math:`\log \pi_0 + \beta (\log p(x, z) - \log \pi_0)`.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import pyro
import torch
from pyro.ops.integrator import velocity_verlet

from pyro_deepgen.mcmc.adaptation import adapt_step_size
from pyro_deepgen.mcmc.checks import check_counts, check_step_size
from pyro_deepgen.mcmc.leapfrog import grad_log_prob

__all__ = ["HMCStep", "hmc_transition", "hmc"]


class HMCStep(NamedTuple):
    """The outcome of one batched HMC transition (:func:`hmc_transition`):
    ``z``, the new state; ``log_prob`` and ``grad``, the log density and its
    gradient there; and per chain (the batch shape) ``accept_prob``, the
    Metropolis acceptance probability, ``accepted``, whether the proposal was
    taken, and ``diverged``, whether its trajectory diverged (a non-finite
    energy, or an error that Pyro's integrator caught)."""

    z: torch.Tensor
    log_prob: torch.Tensor
    grad: torch.Tensor
    accept_prob: torch.Tensor
    accepted: torch.Tensor
    diverged: torch.Tensor


@torch.no_grad()
def hmc_transition(z: torch.Tensor, log_prob: Callable[[torch.Tensor], torch.Tensor],
                   step_size: float | torch.Tensor, num_leapfrog: int = 10,
                   start: tuple[torch.Tensor, torch.Tensor] | None = None) -> HMCStep:
    r"""One HMC transition (Neal 2011, arXiv:1206.1901) of every chain in ``z``,
    targeting :math:`\propto \exp` ``log_prob``: every dimension of ``z`` but the
    last is a batch (chain) dimension, and ``log_prob`` maps ``(*batch, dim)`` to
    ``(*batch,)``. Pyro's :func:`~pyro.ops.integrator.velocity_verlet` makes
    ``num_leapfrog`` steps from :math:`(z, v)`, :math:`v \sim N(0, I)`, to
    :math:`(z', v')`, and each chain accepts with probability

    .. math:: \alpha = \min\{1, \exp(H(z, v) - H(z', v'))\}, \qquad
              H(z, v) = -\log p(z) + \tfrac12 |v|^2.

    A diverging trajectory (a NaN or :math:`-\infty` log ratio) is rejected;
    an error that Pyro's integrator catches (e.g. a singular matrix) rejects
    every chain. The random draws are the momentum, then one uniform per chain.

    When no error was caught, the last call of ``log_prob`` was at the
    proposal: a callable that records values alongside the density can keep
    those of the accepted chains (AIS keeps the two terms of its annealing path).

    :param step_size: a number, or a tensor that broadcasts to the batch shape
        (e.g. one per datapoint, shared by the chains along a leading dimension).
    :param start: ``(log_prob(z), grad)`` at ``z`` if the caller has them (from the
        previous transition at the same target), which saves one evaluation.

    Example:
        >>> import pyro
        >>> pyro.set_rng_seed(0)
        >>> log_p = lambda z: -0.5 * z.pow(2).sum(-1)  # a standard normal, 1000 chains
        >>> step = hmc_transition(torch.randn(1000, 2), log_p, step_size=0.5, num_leapfrog=5)
        >>> step.z.shape, step.accept_prob.shape, bool(step.accept_prob.mean() > 0.9)
        (torch.Size([1000, 2]), torch.Size([1000]), True)
    """
    check_counts("hmc_transition", num_leapfrog=num_leapfrog)
    z = z.detach()
    lp, g = grad_log_prob(log_prob, z) if start is None else start
    eps = torch.as_tensor(step_size, dtype=z.dtype, device=z.device)
    calls = {"started": 0, "finished": 0, "log_prob": None}

    def potential(zs: dict[str, torch.Tensor]) -> torch.Tensor:
        calls["started"] += 1
        lp_z = log_prob(zs["z"])
        calls["log_prob"] = lp_z.detach()
        calls["finished"] += 1
        return -lp_z.sum()

    v = torch.randn_like(z)
    with torch.enable_grad(), pyro.validation_enabled(False):
        new, v_new, g_new, _ = velocity_verlet({"z": z}, {"z": v}, potential, lambda r: r,
                                               eps.unsqueeze(-1), num_leapfrog, {"z": -g})
    if calls["started"] == calls["finished"]:  # its last evaluation was at the proposal
        lp_new = calls["log_prob"]
    else:  # Pyro's exception handler cut a step short: the trajectory is not valid
        lp_new = torch.full_like(lp, math.nan)
    log_ratio = _energy(lp, v) - _energy(lp_new, v_new["z"])
    diverged = torch.isnan(log_ratio) | (log_ratio == -math.inf)
    accept_prob = torch.nan_to_num(log_ratio, nan=-math.inf).clamp(max=0).exp()
    accept = torch.rand_like(accept_prob) < accept_prob
    return HMCStep(z=torch.where(accept.unsqueeze(-1), new["z"].detach(), z),
                   log_prob=torch.where(accept, lp_new, lp),
                   grad=torch.where(accept.unsqueeze(-1), -g_new["z"], g),
                   accept_prob=accept_prob, accepted=accept, diverged=diverged)


def _energy(log_prob: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    r"""The Hamiltonian :math:`-\log p(z) + |v|^2 / 2` per chain."""
    return -log_prob + 0.5 * v.pow(2).sum(-1)


@torch.no_grad()
def hmc(z: torch.Tensor, log_prob: Callable[[torch.Tensor], torch.Tensor],
        step_size: float | torch.Tensor, num_steps: int = 1, num_leapfrog: int = 10,
        target_accept: float | None = None, adapt_rate: float = 0.05,
        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""``num_steps`` HMC transitions (:func:`hmc_transition`; Neal 2011,
    arXiv:1206.1901) of every chain in ``z`` (every dimension but the last is a
    batch dimension), targeting :math:`\propto \exp` ``log_prob``. A non-finite
    log density at the start raises ``RuntimeError``.

    ``step_size`` is a number (one step size per chain) or a tensor that
    broadcasts to the batch shape (the chains along the dimensions it broadcasts
    over share one, which adapts to their mean acceptance). With
    ``target_accept``, the step sizes move after each transition by
    :func:`~pyro_deepgen.mcmc.adapt_step_size` at ``adapt_rate`` (a Robbins-Monro
    step, so the chain is only asymptotically exact while it adapts).

    :returns: ``(z, step_size, accept_prob)``: the new state, the (adapted) step
        sizes (the batch shape for a number), and the mean acceptance probability
        of each chain.

    Example:
        >>> import pyro
        >>> pyro.set_rng_seed(0)
        >>> log_p = lambda z: -0.5 * z.pow(2).sum(-1)  # a standard normal, 1000 chains
        >>> z0 = 3 + torch.randn(1000, 2)  # away from the target
        >>> z, eps, accept = hmc(z0, log_p, 0.5, num_steps=20, num_leapfrog=5)
        >>> bool(z.mean(0).abs().max() < 0.2), eps.shape
        (True, torch.Size([1000]))
    """
    check_step_size(step_size)
    check_counts("hmc", num_steps=num_steps, num_leapfrog=num_leapfrog)
    batch = z.shape[:-1]
    eps = torch.as_tensor(step_size, dtype=z.dtype, device=z.device)
    eps = (eps.expand(batch) if eps.dim() == 0 else eps).clone()
    z = z.detach()
    lp, g = grad_log_prob(log_prob, z)
    if not bool(torch.isfinite(lp).all()):
        raise RuntimeError(f"HMC: the log density is not finite at the start of "
                           f"{int((~torch.isfinite(lp)).sum())} chain(s)")
    accept_sum = torch.zeros(batch, dtype=z.dtype, device=z.device)
    for _ in range(num_steps):
        z, lp, g, accept_prob, _, _ = hmc_transition(z, log_prob, eps, num_leapfrog, (lp, g))
        accept_sum += accept_prob
        if target_accept is not None:
            eps = adapt_step_size(eps, accept_prob, target_accept, adapt_rate)
    return z, eps, accept_sum / num_steps
