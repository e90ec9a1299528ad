"""The importance-weighted autoencoder bound, with standard or doubly
reparameterized gradients."""

from __future__ import annotations

import math
from typing import Callable

import torch

from pyro_deepgen.infer.objective import Objective, Terms

__all__ = ["IWAE", "log_mean_exp"]

GRADIENTS = ("standard", "dreg")


def log_mean_exp(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    return torch.logsumexp(log_w, dim) - math.log(log_w.shape[dim])


class IWAE(Objective):
    r"""The importance-weighted bound, per datapoint under the ``"data"`` plate:

    .. math:: \mathcal{L}_k(x) = \mathbb{E}\Big[\log \frac{1}{k}\sum_{i=1}^k
              \frac{p(x, z_i)}{q(z_i|x)}\Big], \quad z_i \sim q(z|x).

    Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders", 2016,
    arXiv:1509.00519.

    ``gradient="standard"``: reparameterized guide sites get the pathwise
    gradient; non-reparameterized (e.g. discrete) sites get the score-function
    term of the log-mean-exp objective, :math:`\mathcal{L}_k \nabla \sum_i \log q(z_i|x)`,
    which Pyro's ``RenyiELBO(alpha=0)`` omits.

    ``gradient="dreg"``: the doubly reparameterized gradient for the guide,
    :math:`\sum_i \tilde w_i^2 \, \partial \log w_i / \partial z_i \; \partial z_i / \partial \phi`
    (Tucker, Lawson, Gu & Maddison, "Doubly Reparameterized Gradient Estimators
    for Monte Carlo Objectives", 2019, arXiv:1810.04152); the model keeps the
    standard gradient. It needs reparameterized guide sites and model and guide
    parameters registered apart, and has no single ``differentiable_loss``.

    :param num_particles: k, the number of importance samples per datapoint.
    :param gradient: ``"standard"`` or ``"dreg"``.

    Example:
        >>> import pyro
        >>> from pyro.infer import SVI
        >>> from pyro_deepgen.models import VAE
        >>> vae = VAE(x_dim=64, z_dim=2, hidden=(32,))
        >>> svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), IWAE(num_particles=5))
        >>> loss = svi.step(torch.bernoulli(torch.full((8, 64), 0.5)))
    """

    def __init__(self, num_particles: int = 5, gradient: str = "standard", max_plate_nesting: int = 1):
        if gradient not in GRADIENTS:
            raise ValueError(f"unknown gradient {gradient!r}; valid: {', '.join(GRADIENTS)}")
        self.gradient = gradient
        self.needs_reparam = gradient == "dreg"
        super().__init__(num_particles, max_plate_nesting)

    def _terms(self, model: Callable, guide: Callable, args: tuple, kwargs: dict) -> Terms:
        w = self._weights(model, guide, args, kwargs)
        log_w = w.log_w
        bound = log_mean_exp(log_w)
        if self.gradient == "dreg":
            log_w_stl = w.log_w_path()  # no direct dependence on guide params
            weights = torch.softmax(log_w.detach(), dim=0)
            c = w.kl_factor  # a KL factor c turns w^2 into (1 - c) w + c w^2
            if c is None:
                raise ValueError("DReG needs one KL factor for all latent units (no free bits)")
            guide_sur = (((1 - c) * weights + c * weights.pow(2)) * log_w_stl).sum(0)
            return Terms(bound=bound.sum() * w.scale, model_surrogate=bound.sum() * w.scale,
                         guide_surrogate=guide_sur.sum() * w.scale, weights=w)
        surrogate = bound
        if w.log_q_score.requires_grad:
            score = w.log_q_score.sum(0)
            surrogate = bound + bound.detach() * (score - score.detach())
        return Terms(bound=bound.sum() * w.scale, surrogate=surrogate.sum() * w.scale, weights=w)
