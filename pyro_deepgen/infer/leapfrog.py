r"""Hamiltonian dynamics on a model's latent site: the log joint from Pyro's
tracing, a leapfrog integrator that can be differentiated through, and batched
HMC transitions with one accept/reject per datapoint.

Pyro's own integrator (:func:`pyro.ops.integrator.velocity_verlet`) computes the
potential's gradient without ``create_graph``, so gradients cannot flow through
it; :func:`leapfrog` is for the places where they must (Hamiltonian variational
inference). :func:`hmc` uses Pyro's integrator, for the places where they need not
(MCMC-refined guides, MCEM).
"""

from __future__ import annotations

import math
from typing import Callable

import pyro
import torch
from pyro import poutine
from pyro.distributions import constraints
from pyro.ops.integrator import velocity_verlet
from pyro.poutine.util import site_is_subsample

from pyro_deepgen.infer.weights import PARTICLE_PLATE

__all__ = ["log_joint", "grad_log_prob", "leapfrog", "hmc", "check_counts", "check_step_size",
           "check_hmc_options", "check_vector_site"]


def _continuous(site: dict) -> None:
    support = site["fn"].support
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    if support.is_discrete:
        raise ValueError(
            f"Hamiltonian dynamics need a continuous latent site, but {site['name']!r} is "
            f"discrete (support {site['fn'].support}); use IWAE, VIMCO or RWS for discrete latents")
    if support is not constraints.real:
        raise ValueError(
            f"Hamiltonian dynamics run on an unconstrained latent site, but {site['name']!r} "
            f"has support {site['fn'].support}; reparameterize it onto the real line")


def check_vector_site(site: dict, owner: str) -> None:
    """A clear error unless ``site`` holds one vector per datapoint (one event dim,
    under a single vectorized plate at dim -1, besides a particle plate), which is
    what ``owner``'s batched HMC moves."""
    frames = [f for f in site["cond_indep_stack"] if f.vectorized and f.name != PARTICLE_PLATE]
    if site["fn"].event_dim != 1 or len(frames) != 1 or frames[0].dim != -1:
        raise ValueError(
            f"{owner} moves the latent site {site['name']!r} by HMC, one vector per datapoint: it needs "
            "a site with one event dim (e.g. Normal(...).to_event(1)) under one data plate at dim -1; "
            f"this site has event shape {tuple(site['fn'].event_shape)} in the plates "
            f"{[(f.name, f.dim) for f in frames]}. Train this model with IWAE, STL or Reinforce")


def log_joint(model: Callable, args: tuple = (), kwargs: dict | None = None,
              site: str = "z") -> Callable[[torch.Tensor], torch.Tensor]:
    r"""``fn(z)``: :math:`\log p(x, z)` per datapoint, with the model's latent
    ``site`` set to ``z`` and every other sample site observed.

    The model runs under ``poutine.condition`` and ``poutine.trace``, blocked from
    outer handlers, so it works for any model that follows the convention; ``z`` may
    carry extra leading (particle) dimensions. Raises ``ValueError`` if the model
    has another latent site, lacks ``site``, or ``site`` is discrete or constrained.
    """
    kwargs = kwargs or {}

    def fn(z: torch.Tensor) -> torch.Tensor:
        with poutine.block():
            trace = poutine.trace(poutine.condition(model, data={site: z})).get_trace(
                *args, **kwargs)
        if site not in trace.nodes:
            raise ValueError(f"the model has no sample site {site!r}")
        _continuous(trace.nodes[site])
        total = torch.zeros((), dtype=z.dtype, device=z.device)
        for name, s in trace.nodes.items():
            if s["type"] != "sample" or site_is_subsample(s):
                continue
            if not s["is_observed"]:
                raise ValueError(
                    f"Hamiltonian dynamics move the latent site {site!r} only, but the model also "
                    f"samples the latent site {name!r}")
            lp = s["fn"].log_prob(s["value"])
            if s["mask"] is not None and not isinstance(s["mask"], bool):
                lp = torch.where(s["mask"], lp, lp.new_zeros(()))
            elif s["mask"] is False:
                continue
            total = total + lp
        return total

    return fn


def grad_log_prob(fn: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor,
                  create_graph: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(fn(z), d fn(z) / dz)`` per datapoint; with ``create_graph`` both stay
    differentiable (also with respect to parameters inside ``fn``), even when called
    under ``torch.no_grad``. Distribution validation is off, so that a diverging
    trajectory gives non-finite values for the caller to reject or report."""
    with torch.enable_grad(), pyro.validation_enabled(False):
        x = z if (create_graph and z.requires_grad) else z.detach().requires_grad_()
        lp = fn(x)
        g, = torch.autograd.grad(lp.sum(), x, create_graph=create_graph)
    if not create_graph:
        lp = lp.detach()
    return lp, g


def check_step_size(step_size: float | torch.Tensor) -> None:
    t = torch.as_tensor(step_size)
    if not bool(torch.isfinite(t).all()) or bool((t <= 0).any()):
        raise ValueError(f"step_size must be positive and finite; got {step_size}")


def check_counts(owner: str, **counts: int) -> None:
    """A clear error unless every ``label=value`` is an integer >= 1."""
    for label, v in counts.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{owner} needs an integer {label} >= 1; got {v!r}")


def check_hmc_options(owner: str, num_steps: int, num_leapfrog: int, step_size: float,
                      target_accept: float) -> None:
    """Clear errors for the options of an HMC-based objective named ``owner``."""
    check_counts(owner, num_steps=num_steps, num_leapfrog=num_leapfrog)
    check_step_size(step_size)
    if not 0 < target_accept < 1:
        raise ValueError(f"target_accept must be in (0, 1); got {target_accept}")


def leapfrog(z: torch.Tensor, v: torch.Tensor, log_prob: Callable[[torch.Tensor], torch.Tensor],
             step_size: float | torch.Tensor, num_steps: int, create_graph: bool = True,
             grad: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""``num_steps`` leapfrog steps of Hamiltonian dynamics with potential
    :math:`-\log p` and unit mass: a half kick, a drift, a half kick, per step.

    ``step_size`` may be a tensor (per dimension, or per datapoint), which keeps the
    map volume preserving and reversible with negated momentum. With
    ``create_graph`` the result is differentiable with respect to ``z``, ``v``,
    ``step_size`` and the parameters of ``log_prob``.

    :param grad: :math:`\nabla_z \log p` at ``z`` if the caller has it (e.g. from the
        previous call), which saves one gradient evaluation.
    :returns: ``(z, v, grad)``: the new state and the gradient at the new ``z``, to pass
        to the next call.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1; got {num_steps}")
    g = grad_log_prob(log_prob, z, create_graph)[1] if grad is None else grad
    for _ in range(num_steps):
        v = v + 0.5 * step_size * g
        z = z + step_size * v
        _, g = grad_log_prob(log_prob, z, create_graph)
        v = v + 0.5 * step_size * g
    return z, v, g


@torch.no_grad()
def hmc(z: torch.Tensor, log_prob: Callable[[torch.Tensor], torch.Tensor],
        step_size: float | torch.Tensor, num_steps: int = 1, num_leapfrog: int = 10,
        target_accept: float | None = None, adapt_rate: float = 0.05,
        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""``num_steps`` HMC transitions (Neal 2011, "MCMC using Hamiltonian dynamics",
    arXiv:1206.1901) targeting :math:`\propto \exp \log p(z)`, with Pyro's
    :func:`~pyro.ops.integrator.velocity_verlet` and one Metropolis accept/reject
    per datapoint (every dimension but the last is a batch dimension). A diverging
    trajectory (non-finite energy) is rejected; a non-finite log density at the start
    raises ``RuntimeError``.

    ``step_size`` is a float or a tensor of the batch shape (one per datapoint).
    With ``target_accept``, the step size of each datapoint moves after each
    transition by ``exp(adapt_rate * (accept_prob - target_accept))`` (a Robbins-Monro
    step, so the chain is only asymptotically exact while it adapts).

    :returns: ``(z, step_size, accept_prob)``: the new state, the (adapted) step sizes
        with the batch shape, and the mean acceptance probability per datapoint.
    """
    check_step_size(step_size)
    if num_steps < 1 or num_leapfrog < 1:
        raise ValueError(f"num_steps and num_leapfrog must be >= 1; got {num_steps}, {num_leapfrog}")
    batch = z.shape[:-1]
    eps = torch.as_tensor(step_size, dtype=z.dtype, device=z.device).expand(batch).clone()
    z = z.detach()
    lp, g = grad_log_prob(log_prob, z)
    accept_sum = torch.zeros(batch, dtype=z.dtype, device=z.device)

    if not bool(torch.isfinite(lp).all()):
        raise RuntimeError(f"HMC: the log density is not finite at the start of "
                           f"{int((~torch.isfinite(lp)).sum())} chain(s)")

    last: list = [None, None]  # the latest (z, log p(z)) that velocity_verlet evaluated

    def potential(d: dict) -> torch.Tensor:
        lp_z = log_prob(d["z"])
        last[:] = d["z"], lp_z.detach()
        return -lp_z.sum()

    for _ in range(num_steps):
        v = torch.randn_like(z)
        with torch.enable_grad(), pyro.validation_enabled(False):
            new, v_new, g_new, _ = velocity_verlet({"z": z}, {"z": v}, potential, lambda r: r,
                                                   eps.unsqueeze(-1), num_leapfrog, {"z": -g})
        z_new = new["z"].detach()
        if last[0] is new["z"]:  # its final evaluation was at the proposal
            lp_new = last[1]
        else:  # Pyro's exception handler cut it short
            with pyro.validation_enabled(False):
                lp_new = log_prob(z_new)
        log_ratio = lp_new - lp - 0.5 * (v_new["z"].pow(2).sum(-1) - v.pow(2).sum(-1))
        log_ratio = torch.nan_to_num(log_ratio, nan=-math.inf)  # diverged: rejected
        accept_prob = log_ratio.clamp(max=0).exp()
        accept = torch.rand_like(accept_prob) < accept_prob
        z = torch.where(accept.unsqueeze(-1), z_new, z)
        lp = torch.where(accept, lp_new, lp)
        g = torch.where(accept.unsqueeze(-1), -g_new["z"], g)
        accept_sum += accept_prob
        if target_accept is not None:
            eps = eps * torch.exp(adapt_rate * (accept_prob - target_accept))
    return z, eps, accept_sum / num_steps
