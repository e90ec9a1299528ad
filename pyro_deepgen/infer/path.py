"""Path-derivative log densities: ``log q(z)`` whose gradient flows only through ``z``.

STL and DReG drop the score term :math:`\nabla_\phi \log q_\phi(z)|_z` and keep
the path derivative :math:`\partial_z \log q_\phi(z)\, \partial_\phi z`.
"""

from __future__ import annotations

import torch
from pyro.distributions.torch_distribution import TorchDistributionMixin

__all__ = ["path_log_prob"]


def path_log_prob(fn: TorchDistributionMixin, value: torch.Tensor) -> torch.Tensor:
    """A tensor equal to ``fn.log_prob(value)`` whose gradient with respect to
    ``fn``'s parameters is zero except through ``value``."""
    lp = fn.log_prob(value)
    score = fn.log_prob(value.detach())  # gradient: the score at fixed value
    return lp - (score - score.detach())
