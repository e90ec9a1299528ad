"""A VAE with several categorical (one-hot) latent variables."""

from __future__ import annotations

from typing import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyro_deepgen.distributions import IndependentBernoulli
from pyro_deepgen.nn import MLP

__all__ = ["CategoricalVAE"]


class CategoricalVAE(nn.Module):
    r"""A VAE whose latent ``z`` is ``num_vars`` independent one-hot categorical
    variables of ``num_classes`` classes each, with a uniform prior, a
    Bernoulli decoder on the flattened one-hot codes, and an amortized
    categorical guide ``q(z|x)``.

    The discrete latent of Mnih & Rezende, "Variational Inference for Monte
    Carlo Objectives", 2016, arXiv:1602.06725, and of Jang, Gu & Poole,
    "Categorical Reparameterization with Gumbel-Softmax", 2017,
    arXiv:1611.01144 (here without relaxation: it is trained by the
    score-function objectives, VIMCO, IWAE or RWS).

    Site ``"z"`` has shape ``(batch, num_vars, num_classes)``; the model
    registers ``name.decoder``, the guide ``name.encoder``.

    Example:
        >>> import pyro
        >>> from pyro.infer import SVI
        >>> from pyro_deepgen.infer import VIMCO
        >>> vae = CategoricalVAE(64, num_vars=4, num_classes=3, hidden=(32,))
        >>> svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), VIMCO(num_particles=5))
        >>> loss = svi.step(torch.bernoulli(torch.full((8, 64), 0.5)))
    """

    def __init__(self, x_dim: int, num_vars: int = 20, num_classes: int = 10,
                 hidden: Sequence[int] = (200,), activation: str = "tanh", name: str = "catvae"):
        super().__init__()
        if min(x_dim, num_vars) < 1 or num_classes < 2:
            raise ValueError(f"CategoricalVAE needs x_dim >= 1, num_vars >= 1 and num_classes >= 2; "
                             f"got {x_dim}, {num_vars}, {num_classes}")
        self.x_dim, self.num_vars, self.num_classes, self.name = x_dim, num_vars, num_classes, name
        self.z_dim = num_vars * num_classes
        self.encoder = MLP(x_dim, tuple(hidden), self.z_dim, activation)
        self.decoder = MLP(self.z_dim, tuple(reversed(tuple(hidden))), x_dim, activation)

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 2 or x.shape[-1] != self.x_dim:
            raise ValueError(f"CategoricalVAE expects x of shape (batch, {self.x_dim}); got {tuple(x.shape)}")

    def _prior(self, x: torch.Tensor) -> dist.TorchDistribution:
        logits = x.new_zeros(x.shape[0], self.num_vars, self.num_classes)
        return dist.OneHotCategorical(logits=logits).to_event(1)

    def model(self, x: torch.Tensor) -> None:
        """``z ~ Uniform`` one-hot codes, ``x ~ Bernoulli(decoder(z))``."""
        self._check(x)
        pyro.module(f"{self.name}.decoder", self.decoder)
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", self._prior(x))
            pyro.sample("x", IndependentBernoulli(self.decoder(z.flatten(-2))), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        """``z ~ OneHotCategorical(encoder(x))``."""
        self._check(x)
        pyro.module(f"{self.name}.encoder", self.encoder)
        with pyro.plate("data", x.shape[0], dim=-1):
            logits = self.encoder(x).reshape(x.shape[0], self.num_vars, self.num_classes)
            pyro.sample("z", dist.OneHotCategorical(logits=logits).to_event(1))

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Pixel probabilities for one-hot codes ``z`` of shape ``(..., num_vars, num_classes)``."""
        return torch.sigmoid(self.decoder(z.flatten(-2)))

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """Pixel probabilities for ``n`` codes drawn from the prior."""
        p = next(self.parameters())
        z = dist.OneHotCategorical(logits=p.new_zeros(n, self.num_vars, self.num_classes)).sample()
        return self.decode(z)
