r"""Clear errors for the options of Hamiltonian samplers and for the latent sites
they move.

Hamiltonian Monte Carlo (Neal, "MCMC using Hamiltonian dynamics", 2011,
arXiv:1206.1901) and NUTS (Hoffman & Gelman, 2014, arXiv:1111.4246) follow the
gradient :math:`\nabla_z \log p(x, z)`, so every latent site they move must be
continuous; a sampler that moves ``z`` itself, rather than its image under
``biject_to(support)``, also needs the support to be the whole real line.
"""

from __future__ import annotations

import torch
from pyro.distributions import constraints
from pyro.poutine.util import site_is_subsample

__all__ = ["check_counts", "check_step_size", "check_hmc_options", "check_continuous_site",
           "continuous_latent_sites"]


def check_counts(owner: str, **counts: int) -> None:
    """A clear error unless every ``label=value`` is an integer >= 1.

    Example:
        >>> check_counts("HMC", num_steps=2, num_leapfrog=5)
        >>> check_counts("HMC", num_steps=0)
        Traceback (most recent call last):
            ...
        ValueError: HMC needs an integer num_steps >= 1; got 0
    """
    for label, v in counts.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{owner} needs an integer {label} >= 1; got {v!r}")


def check_step_size(step_size: float | torch.Tensor) -> None:
    """A clear error unless the step size (a number, or a tensor of them) is
    positive and finite.

    Example:
        >>> check_step_size(torch.tensor([0.1, 0.2]))
        >>> check_step_size(float("nan"))
        Traceback (most recent call last):
            ...
        ValueError: step_size must be positive and finite; got nan
    """
    t = torch.as_tensor(step_size)
    if not bool(torch.isfinite(t).all()) or bool((t <= 0).any()):
        raise ValueError(f"step_size must be positive and finite; got {step_size}")


def check_hmc_options(owner: str, num_steps: int, num_leapfrog: int, step_size: float,
                      target_accept: float) -> None:
    """Clear errors for the options of an HMC-based objective named ``owner``:
    ``num_steps`` transitions of ``num_leapfrog`` leapfrog steps each, an
    initial ``step_size`` and the acceptance rate ``target_accept`` in (0, 1)
    that the step size adapts toward.

    Example:
        >>> check_hmc_options("MCEM", 10, 10, 0.05, 0.9)
        >>> check_hmc_options("MCEM", 10, 10, 0.05, 1.5)
        Traceback (most recent call last):
            ...
        ValueError: target_accept must be in (0, 1); got 1.5
    """
    check_counts(owner, num_steps=num_steps, num_leapfrog=num_leapfrog)
    check_step_size(step_size)
    if not 0 < target_accept < 1:
        raise ValueError(f"target_accept must be in (0, 1); got {target_accept}")


def check_continuous_site(site: dict, owner: str, unconstrained: bool = False,
                          hint: str = "") -> None:
    """A clear error, naming the site, unless the sample ``site`` of a Pyro
    trace is continuous and, with ``unconstrained``, supported on the whole
    real line (a sampler that moves the value itself, not its image under
    ``biject_to(support)``, needs that).

    :param owner: the sampler or objective, for the message.
    :param hint: a sentence appended to the message for a discrete site (what to
        use instead).

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> from pyro import poutine
        >>> def model():
        ...     pyro.sample("c", dist.Bernoulli(0.5))
        >>> site = poutine.trace(model).get_trace().nodes["c"]
        >>> check_continuous_site(site, "NUTS")
        Traceback (most recent call last):
            ...
        ValueError: Hamiltonian dynamics need a continuous latent site, ... site 'c' is discrete ...
    """
    fn = site["fn"]
    if fn.support.is_discrete:
        raise ValueError(
            f"Hamiltonian dynamics need a continuous latent site, and {owner} takes only continuous "
            f"latent sites; site {site['name']!r} is discrete ({type(fn).__name__}, support "
            f"{fn.support})" + (f"; {hint}" if hint else ""))
    if not unconstrained:
        return
    support = fn.support
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    if support is not constraints.real:
        raise ValueError(
            f"{owner} runs Hamiltonian dynamics on an unconstrained latent site, but "
            f"{site['name']!r} has support {fn.support}; reparameterize it onto the real line")


def continuous_latent_sites(trace, owner: str, hint: str = "") -> list[dict]:
    """The latent sample sites of a Pyro ``trace`` (a plate's subsample sites
    aside), in trace order, after a clear error if there are none or one is
    discrete (:func:`check_continuous_site`).

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> from pyro import poutine
        >>> def model():
        ...     s = pyro.sample("s", dist.LogNormal(0.0, 1.0))
        ...     pyro.sample("x", dist.Normal(0.0, s), obs=torch.tensor(0.5))
        >>> [s["name"] for s in continuous_latent_sites(poutine.trace(model).get_trace(), "AIS")]
        ['s']
    """
    latents = [s for s in trace.nodes.values()
               if s["type"] == "sample" and not s["is_observed"] and not site_is_subsample(s)]
    if not latents:
        raise ValueError(f"{owner} needs a model with latent sample sites; this model has none")
    for s in latents:
        check_continuous_site(s, owner, hint=hint)
    return latents
