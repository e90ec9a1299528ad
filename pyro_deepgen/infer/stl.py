"""Sticking the landing: the ELBO's path-derivative gradient."""

from __future__ import annotations

from typing import Any, Callable

from pyro_deepgen.infer.objective import Objective, Terms

__all__ = ["STL"]


class STL(Objective):
    r"""The ELBO with the *sticking the landing* gradient: the guide's score
    term :math:`-\nabla_\phi \log q_\phi(z|x)` at fixed ``z`` is dropped, which
    leaves an unbiased estimator whose variance is zero when ``q`` equals the
    posterior.

    Roeder, Wu & Duvenaud, "Sticking the Landing: Simple, Lower-Variance
    Gradient Estimators for Variational Inference", 2017, arXiv:1703.09194.

    Pyro's ``Trace_ELBO`` keeps that term for reparameterized sites. Here it is
    removed by :meth:`~pyro_deepgen.infer.weights.LogWeights.log_w_path`,
    which works for any guide distribution, flows included, and for any valid
    Pyro model (global sites and factors included; the guide's factors and
    observed sites keep their whole gradient). Every latent guide site must be
    reparameterized.

    :param num_particles: particles (averaged).
    :param options: Pyro's ``ELBO`` options and ``data_plate`` (see
        :class:`~pyro_deepgen.infer.Objective`).

    Example:
        >>> import pyro
        >>> from pyro.infer import SVI
        >>> from pyro_deepgen.models import VAE
        >>> vae = VAE(x_dim=64, z_dim=2, hidden=(32,))
        >>> svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), STL())
        >>> loss = svi.step(torch.bernoulli(torch.full((8, 64), 0.5)))
    """

    needs_reparam = True
    joint = False

    def __init__(self, num_particles: int = 1, **options: Any):
        super().__init__(num_particles, **options)

    def _terms(self, model: Callable, guide: Callable, args: tuple, kwargs: dict) -> Terms:
        w = self._weights(model, guide, args, kwargs)
        elbo = w.log_w.mean(0)
        surrogate = w.log_w_path().mean(0)
        return Terms(bound=elbo.sum() * w.scale, surrogate=surrogate.sum() * w.scale, weights=w)
