"""Sigmoid belief networks (Helmholtz machines) as Pyro model/guide pairs."""

from __future__ import annotations

from typing import Sequence

import pyro
import torch
from torch import nn

from pyro_deepgen.distributions import IndependentBernoulli

__all__ = ["SigmoidBeliefNet"]


class SigmoidBeliefNet(nn.Module):
    r"""A sigmoid belief network with layers of Bernoulli latents and an
    amortized, bottom-up Bernoulli guide (a Helmholtz machine):

    .. math:: p(h_L) \prod_{l<L} p(h_l | h_{l+1})\, p(x | h_1), \qquad
              q(h_1|x) \prod_{l>1} q(h_l | h_{l-1}),

    every conditional a product of Bernoullis with logits linear in its parent.
    This is the model of Neal, "Connectionist learning of belief networks",
    1992, trained by NVIL (Mnih & Gregor 2014, arXiv:1402.0030), VIMCO (Mnih &
    Rezende 2016, arXiv:1602.06725) and RWS (Bornschein & Bengio 2015,
    arXiv:1406.2751). Its latents are discrete, so it needs score-function
    or wake-sleep objectives.

    Sites: ``"z"`` is the layer next to ``x``, deeper layers are ``"z2"``,
    ``"z3"``, ...; all under ``pyro.plate("data", dim=-1)``. The model
    registers ``name.model`` and the guide ``name.guide``.

    :param x_dim: number of binary pixels.
    :param layers: latent layer sizes, from the one next to ``x`` upwards.

    Example:
        >>> import pyro
        >>> from pyro.infer import SVI
        >>> from pyro_deepgen.infer import VIMCO
        >>> sbn = SigmoidBeliefNet(64, layers=(16,))
        >>> svi = SVI(sbn.model, sbn.guide, pyro.optim.Adam({"lr": 1e-3}), VIMCO(num_particles=5))
        >>> loss = svi.step(torch.bernoulli(torch.full((8, 64), 0.5)))
    """

    def __init__(self, x_dim: int, layers: Sequence[int] = (200,), name: str = "sbn"):
        super().__init__()
        layers = tuple(int(n) for n in layers)
        if not layers or min(layers) < 1 or x_dim < 1:
            raise ValueError(f"SigmoidBeliefNet needs x_dim >= 1 and layers of size >= 1; "
                             f"got x_dim={x_dim}, layers={layers}")
        self.x_dim, self.layers, self.name = x_dim, layers, name
        self.z_dim = layers[0]
        sizes = (x_dim, *layers)
        self.generative = nn.ModuleDict({
            "prior": nn.ParameterList([nn.Parameter(torch.zeros(layers[-1]))]),
            # down[l] maps layer l+1 to layer l (layer 0 is x)
            "down": nn.ModuleList(nn.Linear(sizes[l + 1], sizes[l]) for l in range(len(layers))),
        })
        self.inference = nn.ModuleList(nn.Linear(sizes[l], sizes[l + 1]) for l in range(len(layers)))

    @staticmethod
    def site(level: int) -> str:
        """The site name of latent layer ``level`` (1 is next to x)."""
        return "z" if level == 1 else f"z{level}"

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 2 or x.shape[-1] != self.x_dim:
            raise ValueError(f"SigmoidBeliefNet expects x of shape (batch, {self.x_dim}); "
                             f"got {tuple(x.shape)}")

    def model(self, x: torch.Tensor) -> None:
        """Top-down: ``h_L``, ..., ``h_1``, then ``x``."""
        self._check(x)
        pyro.module(f"{self.name}.model", self.generative)
        down = self.generative["down"]
        with pyro.plate("data", x.shape[0], dim=-1):
            prior = self.generative["prior"][0].expand(x.shape[0], self.layers[-1])
            h = pyro.sample(self.site(len(self.layers)), IndependentBernoulli(prior))
            for level in range(len(self.layers) - 1, 0, -1):
                h = pyro.sample(self.site(level), IndependentBernoulli(down[level](h)))
            pyro.sample("x", IndependentBernoulli(down[0](h)), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        """Bottom-up: ``h_1 ~ q(.|x)``, ``h_2 ~ q(.|h_1)``, ..."""
        self._check(x)
        pyro.module(f"{self.name}.guide", self.inference)
        with pyro.plate("data", x.shape[0], dim=-1):
            h = x
            for level, layer in enumerate(self.inference, start=1):
                h = pyro.sample(self.site(level), IndependentBernoulli(layer(h)))

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Pixel probabilities given the first latent layer."""
        return torch.sigmoid(self.generative["down"][0](z))

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """Pixel probabilities for ``n`` ancestral draws of the latents."""
        down = self.generative["down"]
        h = torch.bernoulli(torch.sigmoid(self.generative["prior"][0]).expand(n, self.layers[-1]))
        for level in range(len(self.layers) - 1, 0, -1):
            h = torch.bernoulli(torch.sigmoid(down[level](h)))
        return self.decode(h)
