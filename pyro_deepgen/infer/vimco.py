"""Variational inference for Monte Carlo objectives."""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from pyro_deepgen.infer.iwae import log_mean_exp
from pyro_deepgen.infer.objective import Objective, Terms

__all__ = ["VIMCO"]


class VIMCO(Objective):
    r"""The IWAE bound (per datapoint, or jointly over the batch when the model
    has global sites: see :class:`~pyro_deepgen.infer.IWAE`) with VIMCO's
    leave-one-out control variates for the score-function term of
    non-reparameterized guide sites, per unit :math:`u`:

    .. math:: \nabla_\phi \mathcal{L}_k \approx s \sum_u \Big[\sum_j \big(\mathcal{L}_{k,u} -
              \mathcal{L}_{k,u}^{(-j)}\big) \nabla_\phi \log q(z_{ju}) + \sum_j \tilde w_{ju}
              \nabla_\phi \log w_{ju}\Big],

    where :math:`\mathcal{L}_{k,u}^{(-j)}` replaces :math:`\log w_{ju}` by the mean of the
    other particles' log weights and :math:`q` is the unscaled density (so that the
    subsampling scale ``s`` and any ``poutine.scale`` count once). Reparameterized
    sites keep the pathwise gradient.

    Mnih & Rezende, "Variational Inference for Monte Carlo Objectives", 2016,
    arXiv:1602.06725.

    :param num_particles: k >= 2.
    :param options: Pyro's ``ELBO`` options and ``data_plate`` (see
        :class:`~pyro_deepgen.infer.Objective`).

    Example:
        >>> import pyro
        >>> from pyro.infer import SVI
        >>> from pyro_deepgen.models import VAE
        >>> vae = VAE(x_dim=64, z_dim=2, hidden=(32,))
        >>> svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), VIMCO(num_particles=5))
        >>> loss = svi.step(torch.bernoulli(torch.full((8, 64), 0.5)))
    """

    min_particles = 2

    def __init__(self, num_particles: int = 5, **options: Any):
        super().__init__(num_particles, **options)

    @staticmethod
    def leave_one_out(log_w: torch.Tensor) -> torch.Tensor:
        """:math:`\\mathcal{L}^{(-j)}` for each particle ``j``, shape ``(k, units)``."""
        k = log_w.shape[0]
        others_mean = (log_w.sum(0, keepdim=True) - log_w) / (k - 1)  # (k, B)
        eye = torch.eye(k, dtype=torch.bool, device=log_w.device).unsqueeze(-1)  # (j, i, 1)
        replaced = torch.where(eye, others_mean.unsqueeze(1), log_w.unsqueeze(0))  # (j, i, B)
        return torch.logsumexp(replaced, dim=1) - math.log(k)

    def _terms(self, model: Callable, guide: Callable, args: tuple, kwargs: dict) -> Terms:
        w = self._weights(model, guide, args, kwargs)
        log_w = w.log_w
        bound = log_mean_exp(log_w)
        surrogate = bound
        if w.score.requires_grad:
            lw = log_w.detach()
            signal = log_mean_exp(lw).unsqueeze(0) - self.leave_one_out(lw)  # (k, units)
            surrogate = bound + (signal * (w.score - w.score.detach())).sum(0)
        return Terms(bound=bound.sum() * w.scale, surrogate=surrogate.sum() * w.scale, weights=w)
