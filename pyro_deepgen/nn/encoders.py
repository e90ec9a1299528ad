"""Encoders that map data to the parameters of a distribution."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn.functional import softplus

from pyro_deepgen.nn.mlp import ACTIVATIONS, MLP

__all__ = ["NormalEncoder"]


class NormalEncoder(nn.Module):
    r"""Maps ``x`` to the location and (positive) scale of a diagonal Normal,
    the amortized Gaussian encoder of Kingma & Welling, "Auto-Encoding
    Variational Bayes" (2014, arXiv:1312.6114).

    The trunk is shared; the two heads are linear. The scale is
    ``softplus(.) + min_scale``.

    Example:
        >>> enc = NormalEncoder(784, (200, 200), 50)
        >>> loc, scale = enc(torch.zeros(3, 784))
        >>> loc.shape, bool((scale > 0).all())
        (torch.Size([3, 50]), True)
    """

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int],
        out_dim: int,
        activation: str = "tanh",
        min_scale: float = 1e-4,
    ):
        super().__init__()
        if not hidden:
            raise ValueError("NormalEncoder needs at least one hidden layer")
        self.trunk = nn.Sequential(
            MLP(in_dim, hidden[:-1], hidden[-1], activation), ACTIVATIONS[activation]()
        )
        self.loc = nn.Linear(hidden[-1], out_dim)
        self.scale = nn.Linear(hidden[-1], out_dim)
        self.min_scale = min_scale
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(x)
        return self.loc(h), softplus(self.scale(h)) + self.min_scale
