r"""The conditional VAE, MNIST quadrant completion, and its neural-net baseline.

Sohn, Lee & Yan, "Learning Structured Output Representation using Deep
Conditional Generative Models", NeurIPS 2015; the conditional generative
model of Kingma, Rezende, Mohamed & Welling, "Semi-supervised Learning with
Deep Generative Models", 2014, arXiv:1406.5298.

Quadrant completion: an image is split into the pixels of the *given*
quadrants (the condition ``c``) and the rest (the output ``x``). With ``k``
quadrants given, they are the first ``k`` of :data:`GIVEN_ORDER`:
bottom-left; then bottom-right (the bottom half); then top-left (all but the
top-right quadrant).
"""

from __future__ import annotations

import math
from typing import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.utils.data import TensorDataset

from pyro_deepgen.infer.weights import log_weights
from pyro_deepgen.models._common import (
    cat,
    check_binary,
    check_likelihood,
    check_x,
    mlp,
    normal_net,
    observation_dist,
    out_dim,
)

__all__ = ["CVAE", "NNRegressor", "GIVEN_ORDER", "quadrant_mask", "split_quadrants",
           "merge_quadrants", "quadrant_dataset", "conditional_nll"]

#: quadrant names; the first ``k`` of them are the given ones
GIVEN_ORDER = ("bottom-left", "bottom-right", "top-left", "top-right")


class CVAE(nn.Module):
    r"""Conditional variational autoencoder: a prior network ``p(z|c)``, a decoder
    ``p(x|c, z)`` and an amortized guide ``q(z|x, c)``, all diagonal Gaussians
    but the decoder (Bernoulli or Gaussian):

    .. math:: \log p(x|c) \ge \mathbb{E}_{q(z|x,c)}[\log p(x|c,z)]
              - \mathrm{KL}(q(z|x,c)\,\|\,p(z|c)).

    Sohn, Lee & Yan, "Learning Structured Output Representation using Deep
    Conditional Generative Models", NeurIPS 2015; Kingma, Rezende, Mohamed &
    Welling, "Semi-supervised Learning with Deep Generative Models", 2014,
    arXiv:1406.5298.

    ``model(x, c)``/``guide(x, c)`` follow the convention with the condition
    as the extra argument: sites ``"z"`` and ``"x"`` under
    ``pyro.plate("data", dim=-1)``, so that :func:`pyro_deepgen.train.fit` and
    :func:`pyro_deepgen.evaluate.log_likelihood` work with ``pass_labels=True``
    on a dataset of ``(x, c)`` (the latter estimates ``log p(x|c)``). The model
    registers ``name.prior`` and ``name.decoder``, the guide ``name.encoder``.

    :param x_dim: size of the output ``x``.
    :param cond_dim: size of the condition ``c``.
    :param z_dim: latent dimension.
    :param hidden: hidden widths of the prior network and the guide; the decoder
        mirrors them. ``()`` makes every network linear (linear-Gaussian
        conditionals, as in the tests).
    :param likelihood: ``"bernoulli"`` or ``"gaussian"``.

    Example:
        >>> import pyro
        >>> from pyro.infer import SVI, Trace_ELBO
        >>> cvae = CVAE(x_dim=48, cond_dim=16, z_dim=2, hidden=(32,))
        >>> x, c = torch.bernoulli(torch.full((8, 48), 0.5)), torch.rand(8, 16)
        >>> svi = SVI(cvae.model, cvae.guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
        >>> loss = svi.step(x, c)
        >>> cvae.generate(c).shape, cvae.generate(c, num_samples=3).shape
        (torch.Size([8, 48]), torch.Size([3, 8, 48]))
    """

    def __init__(
        self,
        x_dim: int,
        cond_dim: int,
        z_dim: int = 50,
        hidden: Sequence[int] = (500, 500),
        likelihood: str = "bernoulli",
        activation: str = "relu",
        name: str = "cvae",
    ):
        super().__init__()
        check_likelihood(likelihood)
        if min(x_dim, cond_dim, z_dim) < 1:
            raise ValueError(f"CVAE needs x_dim, cond_dim and z_dim >= 1; "
                             f"got {x_dim}, {cond_dim}, {z_dim}")
        hidden = tuple(int(h) for h in hidden)
        self.x_dim, self.cond_dim, self.z_dim = x_dim, cond_dim, z_dim
        self.hidden, self.likelihood, self.name = hidden, likelihood, name
        self.prior = normal_net(cond_dim, hidden, z_dim, activation)
        self.encoder = normal_net(x_dim + cond_dim, hidden, z_dim, activation)
        self.decoder = mlp(z_dim + cond_dim, tuple(reversed(hidden)), out_dim(x_dim, likelihood),
                           activation)

    def _check(self, x: torch.Tensor | None, c: torch.Tensor) -> None:
        check_x(self, c, self.cond_dim, "c")
        if x is not None:
            check_x(self, x, self.x_dim)
            if x.shape[0] != c.shape[0]:
                raise ValueError(f"CVAE needs one condition per datapoint; got {x.shape[0]} rows "
                                 f"of x and {c.shape[0]} of c")

    def prior_dist(self, c: torch.Tensor) -> dist.TorchDistribution:
        """``p(z|c)``, event shape ``(z_dim,)``."""
        loc, scale = self.prior(c)
        return dist.Normal(loc, scale).to_event(1)

    def guide_dist(self, x: torch.Tensor, c: torch.Tensor) -> dist.TorchDistribution:
        """``q(z|x, c)``, event shape ``(z_dim,)``."""
        loc, scale = self.encoder(cat(x, c))
        return dist.Normal(loc, scale).to_event(1)

    def likelihood_dist(self, z: torch.Tensor, c: torch.Tensor) -> dist.TorchDistribution:
        """``p(x|c, z)``, event shape ``(x_dim,)``."""
        return observation_dist(self.decoder(cat(z, c)), self.likelihood)

    def model(self, x: torch.Tensor, c: torch.Tensor) -> None:
        """``z ~ p(z|c)``, ``x ~ p(x|c, z)``."""
        self._check(x, c)
        check_binary(self, x, self.likelihood)
        pyro.module(f"{self.name}.prior", self.prior)
        pyro.module(f"{self.name}.decoder", self.decoder)
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", self.prior_dist(c))
            pyro.sample("x", self.likelihood_dist(z, c), obs=x)

    def guide(self, x: torch.Tensor, c: torch.Tensor) -> None:
        """``z ~ q(z|x, c)``."""
        self._check(x, c)
        pyro.module(f"{self.name}.encoder", self.encoder)
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", self.guide_dist(x, c))

    @torch.no_grad()
    def generate(self, c: torch.Tensor, num_samples: int | None = None) -> torch.Tensor:
        """Means of ``p(x|c, z)`` for ``z ~ p(z|c)``: shape ``(batch, x_dim)``, or
        ``(num_samples, batch, x_dim)`` when ``num_samples`` is given."""
        self._check(None, c)
        z = self.prior_dist(c).sample(() if num_samples is None else (num_samples,))
        return self.likelihood_dist(z, c).mean


class NNRegressor(nn.Module):
    """The plain neural-net baseline of quadrant completion: an MLP from the
    condition ``c`` to independent Bernoulli logits of ``x``, trained by
    cross-entropy; its conditional negative log-likelihood is exact.

    Example:
        >>> net = NNRegressor(x_dim=6, cond_dim=4, hidden=(8,))
        >>> c = torch.rand(30, 4); x = (c[:, :1] > 0.5).float().expand(30, 6)
        >>> net = net.fit(x, c, steps=100, lr=0.01)
        >>> net.nll(x, c).shape
        torch.Size([30])
    """

    def __init__(self, x_dim: int, cond_dim: int, hidden: Sequence[int] = (500, 500),
                 activation: str = "relu"):
        super().__init__()
        self.x_dim, self.cond_dim = x_dim, cond_dim
        self.net = mlp(cond_dim, hidden, x_dim, activation)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        """Logits of ``x``."""
        return self.net(c)

    def fit(self, x: torch.Tensor, c: torch.Tensor, steps: int = 1000, batch_size: int = 128,
            lr: float = 1e-3, seed: int = 0, max_time: float | None = None) -> "NNRegressor":
        """``steps`` Adam steps on random mini-batches (at most ``max_time``
        seconds); returns ``self``."""
        import time

        check_x(self, x, self.x_dim)
        check_x(self, c, self.cond_dim, "c")
        g = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(self.parameters(), lr=lr)
        t0 = time.perf_counter()
        for _ in range(steps):
            idx = torch.randint(0, x.shape[0], (min(batch_size, x.shape[0]),), generator=g)
            opt.zero_grad()
            self.nll(x[idx], c[idx], grad=True).mean().backward()
            opt.step()
            if max_time is not None and time.perf_counter() - t0 > max_time:
                break
        return self

    def nll(self, x: torch.Tensor, c: torch.Tensor, grad: bool = False) -> torch.Tensor:
        """``-log p(x|c)`` per datapoint, in nats."""
        with torch.set_grad_enabled(grad):
            return -observation_dist(self.net(c), "bernoulli").log_prob(x)


def quadrant_mask(given: int, shape: tuple[int, int] = (28, 28)) -> torch.Tensor:
    """The flattened boolean mask of the pixels in the ``given`` (1, 2 or 3)
    quadrants of an image of ``shape`` (first of :data:`GIVEN_ORDER`)."""
    if given not in (1, 2, 3):
        raise ValueError(f"given must be 1, 2 or 3 quadrants; got {given!r}")
    h, w = shape
    if h % 2 or w % 2:
        raise ValueError(f"quadrants need an even height and width; got {shape}")
    mask = torch.zeros(h, w, dtype=torch.bool)
    corners = {"top-left": (0, 0), "top-right": (0, w // 2),
               "bottom-left": (h // 2, 0), "bottom-right": (h // 2, w // 2)}
    for name in GIVEN_ORDER[:given]:
        r, col = corners[name]
        mask[r:r + h // 2, col:col + w // 2] = True
    return mask.flatten()


def split_quadrants(images: torch.Tensor, given: int,
                    shape: tuple[int, int] = (28, 28)) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, c)``: the pixels of the missing and of the ``given`` quadrants of
    flattened ``images`` (row-major, of ``shape``)."""
    mask = quadrant_mask(given, shape)
    if images.dim() != 2 or images.shape[1] != mask.numel():
        raise ValueError(f"expected flattened images of shape (batch, {mask.numel()}); "
                         f"got {tuple(images.shape)}")
    return images[:, ~mask], images[:, mask]


def merge_quadrants(x: torch.Tensor, c: torch.Tensor, given: int,
                    shape: tuple[int, int] = (28, 28)) -> torch.Tensor:
    """The inverse of :func:`split_quadrants`: flattened images from the missing
    pixels ``x`` (e.g. a completion) and the given ones ``c``."""
    mask = quadrant_mask(given, shape)
    out = x.new_empty(x.shape[:-1] + (mask.numel(),))
    out[..., mask] = c.expand(x.shape[:-1] + c.shape[-1:])
    out[..., ~mask] = x
    return out


def quadrant_dataset(images: torch.Tensor, given: int,
                     shape: tuple[int, int] = (28, 28)) -> TensorDataset:
    """``TensorDataset(x, c)`` of :func:`split_quadrants`, for ``fit`` and the
    evaluators with ``pass_labels=True``."""
    return TensorDataset(*split_quadrants(images, given, shape))


@torch.no_grad()
def conditional_nll(cvae: CVAE, x: torch.Tensor, c: torch.Tensor, num_samples: int = 100,
                    batch_size: int = 100) -> torch.Tensor:
    r"""The IWAE-``num_samples`` estimate of :math:`-\log p(x|c)` per datapoint
    (nats), :math:`-\log \frac1k \sum_i p(x, z_i|c)/q(z_i|x, c)`: an upper bound in
    expectation, which tightens as ``num_samples`` grows. The same estimate as
    :func:`pyro_deepgen.evaluate.log_likelihood` with ``pass_labels=True``."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1; got {num_samples}")
    out = []
    with pyro.validation_enabled(False):
        for i in range(0, x.shape[0], batch_size):
            w = log_weights(cvae.model, cvae.guide, (x[i:i + batch_size], c[i:i + batch_size]), {},
                            num_samples, use_scale=False)
            out.append(math.log(num_samples) - torch.logsumexp(w.log_w, dim=0))
    return torch.cat(out)
