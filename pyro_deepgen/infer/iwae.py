"""The importance-weighted autoencoder bound, with standard or doubly
reparameterized gradients."""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from pyro_deepgen.infer.objective import Objective, Terms

__all__ = ["IWAE", "log_mean_exp"]

GRADIENTS = ("standard", "dreg")


def log_mean_exp(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    return torch.logsumexp(log_w, dim) - math.log(log_w.shape[dim])


class IWAE(Objective):
    r"""The importance-weighted bound (Burda, Grosse & Salakhutdinov,
    "Importance Weighted Autoencoders", 2016, arXiv:1509.00519).

    With :math:`z_i \sim q`, :math:`i = 1..k`, and the log weights per unit
    :math:`\log w_{iu}` of :mod:`pyro_deepgen.infer.weights`, the bound is

    .. math::

        \mathcal{L}_k = s \sum_u \mathbb{E}\Big[\log \frac{1}{k}\sum_{i=1}^k w_{iu}\Big]
        \le s \sum_u \log p(x_u),

    where ``s`` is the data plate's subsampling scale. When every sample site
    is under the data plate, the units are the datapoints: the per-datapoint
    IWAE bound. A site outside it (a global latent :math:`\beta`) couples
    the datapoints, and the batch becomes one unit with the joint weight

    .. math::

        w_i = \frac{p(\beta_i) \prod_b p(x_b, z_{ib} \mid \beta_i)}
                   {q(\beta_i) \prod_b q(z_{ib} \mid x_b, \beta_i)}, \qquad
        \mathcal{L}_k = \mathbb{E}\Big[\log \frac1k \sum_i w_i\Big] \le \log p(x),

    Pyro's ``RenyiELBO(alpha=0)`` bound, with every scale applied inside
    :math:`\log w_i`. The bound rises with ``k`` towards :math:`\log p(x)`;
    with ``k = 1`` it is the ELBO.

    ``gradient="standard"``: reparameterized guide sites get the pathwise
    gradient; non-reparameterized (e.g. discrete) sites get the score-function
    term of the log-mean-exp objective,
    :math:`s\,\mathcal{L}_{k,u} \nabla \sum_i \log q(z_{iu})` with the unscaled
    density :math:`q` (which Pyro's ``RenyiELBO`` omits). With ``k = 1`` the
    gradient is ``Trace_ELBO``'s, Rao-Blackwellized by plates.

    ``gradient="dreg"``: the doubly reparameterized gradient for the guide,
    :math:`\sum_i \tilde w_i^2 \, \partial \log w_i / \partial z_i \; \partial z_i / \partial \phi`
    (Tucker, Lawson, Gu & Maddison, "Doubly Reparameterized Gradient Estimators
    for Monte Carlo Objectives", 2019, arXiv:1810.04152); the model keeps the
    standard gradient. It needs reparameterized guide sites, no observed sites
    or factors in the guide, and model and guide parameters registered apart;
    it has no single ``differentiable_loss``.

    :param num_particles: k, the number of importance samples.
    :param gradient: ``"standard"`` or ``"dreg"``.
    :param options: Pyro's ``ELBO`` options and ``data_plate`` (see
        :class:`~pyro_deepgen.infer.Objective`).

    Example:
        >>> import pyro
        >>> from pyro.infer import SVI
        >>> from pyro_deepgen.models import VAE
        >>> vae = VAE(x_dim=64, z_dim=2, hidden=(32,))
        >>> svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), IWAE(num_particles=5))
        >>> loss = svi.step(torch.bernoulli(torch.full((8, 64), 0.5)))
    """

    def __init__(self, num_particles: int = 5, gradient: str = "standard", **options: Any):
        if gradient not in GRADIENTS:
            raise ValueError(f"unknown gradient {gradient!r}; valid: {', '.join(GRADIENTS)}")
        self.gradient = gradient
        self.needs_reparam = gradient == "dreg"
        super().__init__(num_particles, **options)

    def _terms(self, model: Callable, guide: Callable, args: tuple, kwargs: dict) -> Terms:
        w = self._weights(model, guide, args, kwargs)
        s = w.scale
        log_w = w.log_w
        bound = log_mean_exp(log_w)
        if self.gradient == "dreg":
            guide_only = w.guide_only_sites()
            if guide_only:
                raise ValueError(
                    f"DReG gradients need a guide whose sites are all sampled, but {guide_only} are "
                    "observed sites or factors of the guide; use gradient='standard'")
            log_w_stl = w.log_w_path()  # no direct dependence on guide params
            weights = torch.softmax(log_w.detach(), dim=0)
            c = w.kl_factor  # a KL factor c turns w^2 into (1 - c) w + c w^2
            if c is None:
                raise ValueError("DReG needs one KL factor for all latent units (no free bits)")
            guide_sur = (((1 - c) * weights + c * weights.pow(2)) * log_w_stl).sum(0)
            return Terms(bound=bound.sum() * s, model_surrogate=bound.sum() * s,
                         guide_surrogate=guide_sur.sum() * s, weights=w)
        if self.num_particles == 1:  # the ELBO, with Trace_ELBO's estimator
            surrogate = w.log_w_reparam.sum() * s + w.rb_score().sum()
            return Terms(bound=bound.sum() * s, surrogate=surrogate, weights=w)
        surrogate = bound
        if w.score.requires_grad:
            score = w.score.sum(0)
            surrogate = bound + bound.detach() * (score - score.detach())
        return Terms(bound=bound.sum() * s, surrogate=surrogate.sum() * s, weights=w)
