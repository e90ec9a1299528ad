r"""The log joint :math:`\log p(x, z)` of a model as a function of one latent
site, from Pyro's tracing: the log density that Hamiltonian dynamics
(:mod:`pyro_deepgen.mcmc`) move that site on, in MCEM, the MCMC-refined ELBO and
Hamiltonian variational inference; and the check that the site holds one
vector per datapoint, which their batched HMC needs.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from pyro_deepgen.infer.weights import PARTICLE_PLATE, Layout
from pyro_deepgen.mcmc import check_continuous_site

__all__ = ["log_joint", "check_vector_site"]


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


def log_joint(model: Callable, args: tuple = (), kwargs: dict | None = None, site: str = "z",
              owner: str = "HMC") -> Callable[[torch.Tensor], torch.Tensor]:
    r"""``fn(z)``: :math:`\log p(x, z)` per datapoint, with the model's latent
    ``site`` set to ``z`` and every other sample site observed.

    The model runs under ``poutine.condition`` and ``poutine.trace``, blocked from
    outer handlers, so it works for any model that follows the convention; ``z`` may
    carry extra leading (particle) dimensions, which the result keeps before the
    datapoints' dimension. The datapoints are the outermost plate of ``site``; each
    site's log density is masked (scales aside: the target is the model's own
    posterior) and reduced per datapoint by
    :meth:`pyro_deepgen.infer.weights.Layout.site`: summed over its other plates
    and, for a site outside that plate, spread evenly over the datapoints, so
    that the sum over datapoints is :math:`\log p(x, z)` of the batch.
    Raises ``ValueError`` (naming ``owner``) if the model has another latent
    site, lacks ``site``, or ``site`` is discrete or constrained.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model(x):
        ...     with pyro.plate("data", len(x)):
        ...         z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.).to_event(1))
        ...         pyro.sample("x", dist.Normal(z.sum(-1), 0.5), obs=x)
        >>> log_p = log_joint(model, (torch.tensor([0.0, 1.0, 2.0]),))  # three datapoints
        >>> log_p(torch.zeros(5, 3, 2)).shape  # five particles of z per datapoint
        torch.Size([5, 3])
    """
    kwargs = kwargs or {}

    def fn(z: torch.Tensor) -> torch.Tensor:
        with poutine.block():
            trace = poutine.trace(poutine.condition(model, data={site: z})).get_trace(
                *args, **kwargs)
        if site not in trace.nodes:
            raise ValueError(f"the model has no sample site {site!r}")
        check_continuous_site(trace.nodes[site], owner, unconstrained=True,
                              hint="use IWAE, VIMCO or RWS for discrete latents")
        sites = [s for s in trace.nodes.values() if s["type"] == "sample" and not site_is_subsample(s)]
        for s in sites:
            if not s["is_observed"]:
                raise ValueError(
                    f"Hamiltonian dynamics move the latent site {site!r} only, but the model also "
                    f"samples the latent site {s['name']!r}")
        layout, lead = _layout(trace.nodes[site], sites, z)

        def flat_log_prob(d, value: torch.Tensor) -> torch.Tensor:  # the leading dims in one
            return _flatten(d.log_prob(value), lead, layout.nesting)

        total = torch.zeros((), dtype=z.dtype, device=z.device)
        for s in sites:
            total = total + layout.site(s, log_prob=flat_log_prob)
        return total.reshape(lead + ((layout.units,) if layout.frame is not None else ()))

    return fn


def _layout(latent: dict, sites: list[dict], z: torch.Tensor) -> tuple[Layout, torch.Size]:
    """The per-datapoint layout of a trace's ``sites`` with the ``latent`` site set
    to ``z``: the datapoints are the outermost plate of the latent site, one
    particle per element of its leading dims (those left of the model's plates),
    which are returned too."""
    nesting = max((-f.dim for s in sites for f in s["cond_indep_stack"] if f.vectorized), default=0)
    frame = min((f for f in latent["cond_indep_stack"] if f.vectorized), key=lambda f: f.dim,
                default=None)
    batch = z.shape[:z.dim() - latent["fn"].event_dim]
    lead = batch[:max(len(batch) - nesting, 0)]
    units = frame.size if frame is not None else 1
    return Layout(math.prod(lead), nesting, frame, units, 1.0, use_scale=False), lead


def _flatten(lp: torch.Tensor, lead: torch.Size, nesting: int) -> torch.Tensor:
    """A site's log density with the leading dims ``lead`` (left of the ``nesting``
    plate dims) in one, as :class:`~pyro_deepgen.infer.weights.Layout` takes it."""
    if not lead or lp.dim() <= nesting:
        return lp
    plates = lp.shape[lp.dim() - nesting:]
    return lp.expand(lead + plates).reshape((-1,) + plates)
