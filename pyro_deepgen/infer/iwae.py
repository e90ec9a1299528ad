"""The importance-weighted autoencoder bound."""

from __future__ import annotations

import math
from typing import Callable

import torch
from pyro.infer import ELBO

from pyro_deepgen.infer.weights import log_weights

__all__ = ["IWAE"]


class IWAE(ELBO):
    r"""The importance-weighted bound, per datapoint under the ``"data"`` plate:

    .. math:: \mathcal{L}_k(x) = \mathbb{E}\Big[\log \frac{1}{k}\sum_{i=1}^k
              \frac{p(x, z_i)}{q(z_i|x)}\Big], \quad z_i \sim q(z|x).

    Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders", 2016,
    arXiv:1509.00519.

    Reparameterized guide sites get the pathwise gradient. Non-reparameterized
    (e.g. discrete) sites get the score-function term of the log-mean-exp
    objective, :math:`\mathcal{L}_k \nabla \sum_i \log q(z_i|x)`, which Pyro's
    ``RenyiELBO(alpha=0)`` omits.

    :param num_particles: k, the number of importance samples per datapoint.
    :param max_plate_nesting: plates nested in the model (1 by the convention).

    Example:
        >>> import pyro
        >>> from pyro.infer import SVI
        >>> from pyro_deepgen.models import VAE
        >>> vae = VAE(x_dim=64, z_dim=2, hidden=(32,))
        >>> svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), IWAE(num_particles=5))
        >>> loss = svi.step(torch.bernoulli(torch.full((8, 64), 0.5)))
    """

    def __init__(self, num_particles: int = 5, max_plate_nesting: int = 1):
        if not isinstance(num_particles, int) or num_particles < 1:
            raise ValueError(f"IWAE needs an integer num_particles >= 1; got {num_particles!r}")
        super().__init__(
            num_particles=num_particles,
            max_plate_nesting=max_plate_nesting,
            vectorize_particles=True,
        )
        self.max_plate_nesting = max_plate_nesting

    def _get_trace(self, model: Callable, guide: Callable, args, kwargs):
        w = log_weights(model, guide, args, kwargs, self.num_particles, self.max_plate_nesting)
        return w.model_trace, w.guide_trace

    def _surrogate(self, model: Callable, guide: Callable, args, kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        w = log_weights(model, guide, args, kwargs, self.num_particles, self.max_plate_nesting)
        bound = torch.logsumexp(w.log_w, dim=0) - math.log(self.num_particles)
        surrogate = bound
        if w.log_q_score.requires_grad:
            score = w.log_q_score.sum(0)
            surrogate = bound + bound.detach() * (score - score.detach())
        return -(bound.detach().sum() * w.scale), -(surrogate.sum() * w.scale)

    def differentiable_loss(self, model: Callable, guide: Callable, *args, **kwargs) -> torch.Tensor:
        """The negative bound, summed over the data plate, with gradients that
        are unbiased for the bound's gradient."""
        return self._surrogate(model, guide, args, kwargs)[1]

    def loss(self, model: Callable, guide: Callable, *args, **kwargs) -> float:
        with torch.no_grad():
            return self._surrogate(model, guide, args, kwargs)[0].item()

    def loss_and_grads(self, model: Callable, guide: Callable, *args, **kwargs) -> float:
        loss, surrogate = self._surrogate(model, guide, args, kwargs)
        if surrogate.requires_grad:
            surrogate.backward()
        return loss.item()
