r"""The NUTS posterior of one datapoint's latents, as ArviZ ``InferenceData``.

With the model's parameters fixed, Pyro's No-U-Turn sampler (Hoffman & Gelman,
"The No-U-Turn Sampler: Adaptively Setting Path Lengths in Hamiltonian Monte
Carlo", 2014, arXiv:1111.4246) samples :math:`p(z|x)` for one ``x``; set
against the encoder's :math:`q(z|x)` it shows the amortization gap (Cremer, Li
& Duvenaud, "Inference Suboptimality in Variational Autoencoders", 2018,
arXiv:1801.03558).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.infer.autoguide.initialization import init_to_sample
from pyro.infer.mcmc import MCMC, NUTS
from pyro.util import get_rng_state, set_rng_state

from pyro_deepgen.mcmc.checks import continuous_latent_sites

if TYPE_CHECKING:  # arviz is imported when needed: importing it is slow and noisy
    import arviz

__all__ = ["mcmc_posterior"]


def _one_datapoint(x: torch.Tensor) -> torch.Tensor:
    if not torch.is_tensor(x):
        raise TypeError(f"x must be a tensor; got {type(x).__name__}")
    if x.dim() == 1:
        return x.unsqueeze(0)
    if x.dim() >= 2 and x.shape[0] == 1:
        return x
    raise ValueError(f"mcmc_posterior takes one datapoint, of shape (x_dim,) or (1, x_dim); "
                     f"got shape {tuple(x.shape)}")


def _latent_sites(model: Callable, args: tuple) -> list[str]:
    with torch.no_grad():
        trace = poutine.trace(model).get_trace(*args)
    return [s["name"] for s in continuous_latent_sites(trace, "mcmc_posterior")]


def mcmc_posterior(
    model: Callable,
    x: torch.Tensor,
    num_samples: int = 500,
    warmup: int = 500,
    chains: int = 2,
    args: tuple = (),
    target_accept: float = 0.8,
    max_tree_depth: int = 10,
    seed: int | None = 0,
    progress: bool = False,
) -> "arviz.InferenceData":
    r"""Samples the posterior of one datapoint's latent sites with Pyro's ``NUTS``
    and returns it as ``arviz.InferenceData``, so that ``arviz.rhat``, ``ess``,
    ``mcse``, ``summary`` and ``plot_trace`` work.

    The model is called as ``model(x[None], *args)``: a batch of one under its
    ``"data"`` plate. Its parameters (the decoder) stay as they are; NUTS
    differentiates with respect to the latent sites only. The ``chains`` chains
    run one after another in this process (Pyro's parallel chains need worker
    processes), each from its own draw from the prior, so that R-hat can detect
    chains that have not mixed; chain ``c`` is seeded with ``seed + c``, and the
    global RNG state is restored afterwards (``seed=None``: the global stream).

    Each latent site is in the ``posterior`` group with dims ``(chain, draw,
    *event)`` (the data plate of size one dropped); ``sample_stats`` holds
    ``diverging``, and ``observed_data`` holds ``x``.

    Hoffman & Gelman, "The No-U-Turn Sampler", 2014, arXiv:1111.4246.

    :param x: one datapoint, of shape ``(x_dim,)`` or ``(1, x_dim)``.
    :param num_samples: draws kept per chain; ``warmup``: adaptation steps per chain.
    :param args: further model arguments (labels, conditions), each a batch of one.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model(x):
        ...     with pyro.plate("data", x.shape[0], dim=-1):
        ...         z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.).to_event(1))
        ...         pyro.sample("x", dist.Normal(z, 1.).to_event(1), obs=x)
        >>> idata = mcmc_posterior(model, torch.tensor([1.0, -1.0]), num_samples=50, warmup=50)
        >>> idata.posterior["z"].shape
        (2, 50, 2)
    """
    for name, value in (("num_samples", num_samples), ("chains", chains)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    if not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an integer >= 0; got {warmup!r}")
    x = _one_datapoint(x)
    args = (x,) + tuple(args)
    rng = get_rng_state()
    chain_draws = []
    try:
        # NaN parameters would fail Pyro's argument checks; they get the clearer error of _chain
        with pyro.validation_enabled(False):
            names = _latent_sites(model, args)
            for c in range(chains):
                if seed is not None:
                    pyro.set_rng_seed(seed + c)
                chain_draws.append(_chain(model, args, names, c, num_samples, warmup, target_accept,
                                          max_tree_depth, progress))
    finally:
        if seed is not None:
            set_rng_state(rng)

    import arviz as az

    return az.from_dict(
        posterior={n: np.stack([d[n] for d in chain_draws]) for n in names},
        sample_stats={"diverging": np.stack([d["diverging"] for d in chain_draws])},
        observed_data={"x": x[0].detach().cpu().numpy()},
    )


def _chain(model: Callable, args: tuple, names: list[str], c: int, num_samples: int, warmup: int,
           target_accept: float, max_tree_depth: int, progress: bool) -> dict[str, np.ndarray]:
    """One NUTS chain from a prior draw: each site's draws (without the data
    plate) and ``diverging``."""
    kernel = NUTS(model, target_accept_prob=target_accept, max_tree_depth=max_tree_depth,
                  init_strategy=init_to_sample)
    mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=warmup, num_chains=1,
                disable_progbar=not progress)
    try:
        mcmc.run(*args)
    except (RuntimeError, ValueError) as e:  # Pyro raises a ValueError
        if "find valid initial params" in str(e):
            raise ValueError(
                f"NUTS chain {c} found no starting point with a finite log density: the "
                "model's log density is NaN or infinite at every draw from the prior; check the "
                "model and its parameters for NaN") from e
        raise
    samples = mcmc.get_samples()
    out = {}
    for n in names:
        v = samples[n].detach()
        if not torch.isfinite(v).all():
            raise ValueError(f"NUTS chain {c} produced non-finite values of site {n!r}; check the "
                             "model and its parameters for NaN")
        out[n] = v.reshape((num_samples,) + v.shape[2:]).cpu().numpy()
    divergent = set(mcmc.diagnostics().get("divergences", {}).get("chain 0", []))
    out["diverging"] = np.array([i in divergent for i in range(num_samples)])
    return out
