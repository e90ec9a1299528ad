r"""Deep latent Gaussian models: several stochastic layers, a bottom-up guide."""

from __future__ import annotations

from typing import NamedTuple, Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.utils.data import Dataset

from pyro_deepgen.models._common import (
    check_binary,
    check_likelihood,
    check_x,
    mlp,
    normal_net,
    observation_dist,
    out_dim,
)

__all__ = ["DLGM", "LayerActiveUnits"]


def _per_layer(hidden, layers: int) -> tuple[tuple[int, ...], ...]:
    """A flat width list applies to every layer; a list of lists is per layer."""
    hidden = tuple(hidden)
    if all(isinstance(h, (int,)) or (torch.is_tensor(h) and h.dim() == 0) for h in hidden):
        return tuple(tuple(int(h) for h in hidden) for _ in range(layers))
    per = tuple(tuple(int(h) for h in layer) for layer in hidden)
    if len(per) != layers:
        raise ValueError(f"hidden has widths for {len(per)} layers but z_dims has {layers}")
    return per


class LayerActiveUnits(NamedTuple):
    """Active units of one stochastic layer (see :meth:`DLGM.active_units`)."""

    site: str
    num_active: int
    variance: torch.Tensor


class DLGM(nn.Module):
    r"""A deep latent Gaussian model with ``L = len(z_dims)`` stochastic layers:

    .. math:: p(z_L) = \mathcal{N}(0, I), \quad
              p(z_l | z_{l+1}) = \mathcal{N}(\mu_l(z_{l+1}), \mathrm{diag}\,\sigma_l^2(z_{l+1})),
              \quad p(x | z_1),

    with a bottom-up guide amortized per layer,
    :math:`q(z_1|x) \prod_{l>1} q(z_l|z_{l-1})`, every conditional a diagonal
    Gaussian from its own network. This is the two-stochastic-layer
    architecture of Burda, Grosse & Salakhutdinov, "Importance Weighted
    Autoencoders", 2016, arXiv:1509.00519 (``z_dims=(100, 50)``, hidden
    ``(200, 200)`` then ``(100, 100)``); Rezende, Mohamed & Wierstra,
    "Stochastic Backpropagation and Approximate Inference in Deep Generative
    Models", 2014, arXiv:1401.4082.

    Sites: ``"z"`` is the layer next to ``x`` (the convention's main latent),
    deeper layers are ``"z2"``, ``"z3"``, ... (as in
    :class:`~pyro_deepgen.models.SigmoidBeliefNet`), all under
    ``pyro.plate("data", dim=-1)``; every guide site is reparameterized, so
    ELBO, IWAE and DReG (``iwae-dreg-K``) all apply. The model registers
    ``name.decoder`` (every top-down network), the guide ``name.encoder``.

    :param x_dim: number of features of x.
    :param z_dims: latent sizes, from the layer next to ``x`` upwards.
    :param hidden: hidden widths of each layer's networks: one list of widths
        for every layer, or one list per layer. Layer ``l``'s guide network
        (from below) uses them, its top-down network mirrors them.
    :param likelihood: ``"bernoulli"`` or ``"gaussian"``.

    Example:
        >>> import pyro
        >>> from pyro.infer import SVI
        >>> from pyro_deepgen.infer import IWAE
        >>> dlgm = DLGM(x_dim=64, z_dims=(8, 4), hidden=((32,), (16,)))
        >>> svi = SVI(dlgm.model, dlgm.guide, pyro.optim.Adam({"lr": 1e-3}), IWAE(5, gradient="dreg"))
        >>> loss = svi.step(torch.bernoulli(torch.full((16, 64), 0.5)))
        >>> [au.num_active <= n for au, n in zip(dlgm.active_units(torch.ones(10, 64)), (8, 4))]
        [True, True]
    """

    def __init__(
        self,
        x_dim: int,
        z_dims: Sequence[int] = (100, 50),
        hidden: Sequence[int] | Sequence[Sequence[int]] = ((200, 200), (100, 100)),
        likelihood: str = "bernoulli",
        activation: str = "tanh",
        name: str = "dlgm",
    ):
        super().__init__()
        check_likelihood(likelihood)
        z_dims = tuple(int(z) for z in z_dims)
        if not z_dims or min(z_dims) < 1 or x_dim < 1:
            raise ValueError(f"DLGM needs x_dim >= 1 and at least one latent layer of size >= 1; "
                             f"got x_dim={x_dim}, z_dims={z_dims}")
        per = _per_layer(hidden, len(z_dims))
        self.x_dim, self.z_dims, self.hidden = x_dim, z_dims, per
        self.z_dim = z_dims[0]
        self.likelihood, self.name = likelihood, name
        below = (x_dim, *z_dims[:-1])
        # inference[l]: layer l+1 from the layer below it (x for the first)
        self.encoder = nn.ModuleList(normal_net(below[l], per[l], z_dims[l], activation)
                                     for l in range(len(z_dims)))
        # top_down[l]: layer l+1 from layer l+2 (l = 0 .. L-2)
        self.decoder = nn.ModuleDict({
            "x": mlp(z_dims[0], tuple(reversed(per[0])), out_dim(x_dim, likelihood), activation),
            "top_down": nn.ModuleList(normal_net(z_dims[l + 1], tuple(reversed(per[l + 1])), z_dims[l],
                                                 activation) for l in range(len(z_dims) - 1)),
        })

    @staticmethod
    def site(level: int) -> str:
        """The site name of latent layer ``level`` (1 is next to x)."""
        return "z" if level == 1 else f"z{level}"

    @property
    def sites(self) -> tuple[str, ...]:
        """The latent sites, from the layer next to ``x`` upwards."""
        return tuple(self.site(level) for level in range(1, len(self.z_dims) + 1))

    def likelihood_dist(self, z: torch.Tensor) -> dist.TorchDistribution:
        """``p(x|z_1)``, event shape ``(x_dim,)``."""
        return observation_dist(self.decoder["x"](z), self.likelihood)

    def _conditional(self, net: nn.Module, h: torch.Tensor) -> dist.TorchDistribution:
        loc, scale = net(h)
        return dist.Normal(loc, scale).to_event(1)

    def model(self, x: torch.Tensor) -> None:
        """Top-down: ``z_L ~ N(0, I)``, ..., ``z_1 ~ p(z_1|z_2)``, then ``x ~ p(x|z_1)``."""
        check_x(self, x, self.x_dim)
        check_binary(self, x, self.likelihood)
        pyro.module(f"{self.name}.decoder", self.decoder)
        top_down = self.decoder["top_down"]
        with pyro.plate("data", x.shape[0], dim=-1):
            top = self.z_dims[-1]
            h = pyro.sample(self.site(len(self.z_dims)),
                            dist.Normal(x.new_zeros(top), 1.0).to_event(1))
            for level in range(len(self.z_dims) - 1, 0, -1):
                h = pyro.sample(self.site(level), self._conditional(top_down[level - 1], h))
            pyro.sample("x", self.likelihood_dist(h), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        """Bottom-up: ``z_1 ~ q(z_1|x)``, ``z_2 ~ q(z_2|z_1)``, ..."""
        check_x(self, x, self.x_dim)
        pyro.module(f"{self.name}.encoder", self.encoder)
        with pyro.plate("data", x.shape[0], dim=-1):
            h = x
            for level, net in enumerate(self.encoder, start=1):
                h = pyro.sample(self.site(level), self._conditional(net, h))

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The mean of ``p(x|z_1)``."""
        return self.likelihood_dist(z).mean

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """Means of ``p(x|z_1)`` for ``n`` ancestral draws of the latent layers."""
        p = next(self.parameters())
        h = torch.randn(n, self.z_dims[-1], device=p.device, dtype=p.dtype)
        for level in range(len(self.z_dims) - 1, 0, -1):
            h = self._conditional(self.decoder["top_down"][level - 1], h).sample()
        return self.decode(h)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decoder mean at the guide's mean of ``z_1``."""
        check_x(self, x, self.x_dim)
        return self.decode(self.encoder[0](x)[0])

    @torch.no_grad()
    def posterior_means(self, x: torch.Tensor, num_samples: int = 100) -> list[torch.Tensor]:
        r"""``E_q[z_l | x]`` for every layer, shape ``(batch, z_dims[l])`` each: exact
        for ``z_1``; for a deeper layer the average over ``num_samples`` draws of the
        layer below of ``q(z_l|z_{l-1})``'s mean (Rao-Blackwellized)."""
        check_x(self, x, self.x_dim)
        loc, scale = self.encoder[0](x)
        means = [loc]
        h = dist.Normal(loc, scale).sample((num_samples,))  # (S, batch, z_1)
        for net in self.encoder[1:]:
            loc, scale = net(h)
            means.append(loc.mean(0))
            h = dist.Normal(loc, scale).sample()
        return means

    @torch.no_grad()
    def active_units(self, data: torch.Tensor | Dataset, threshold: float = 0.01,
                     num_samples: int = 100, batch_size: int = 500) -> list[LayerActiveUnits]:
        r"""Active units per layer: the units ``i`` of layer ``l`` with
        :math:`\mathrm{Cov}_x(\mathbb{E}_q[z_{l,i}|x]) > \text{threshold}` (Burda et
        al. 2016, section 5.2), with the means of :meth:`posterior_means`.

        For deeper layers the guide's mean given one draw of the layer below
        (what a generic per-site count sees) varies with that draw; here that
        draw is averaged out, so sampling noise is not counted as activity.
        """
        x_all = data if torch.is_tensor(data) else data[torch.arange(len(data))][0]
        p = next(self.parameters())
        chunks = [self.posterior_means(x_all[i:i + batch_size].to(p.device, p.dtype), num_samples)
                  for i in range(0, x_all.shape[0], batch_size)]
        out = []
        for level, site in enumerate(self.sites):
            m = torch.cat([c[level] for c in chunks]).cpu()
            var = m.var(0, unbiased=False) if m.shape[0] > 1 else torch.zeros(m.shape[1])
            out.append(LayerActiveUnits(site, int((var > threshold).sum()), var))
        return out
