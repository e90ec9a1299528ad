"""The variational autoencoder as a Pyro model/guide pair."""

from __future__ import annotations

from typing import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyro_deepgen.guides import FlowGuide, HamiltonianGuide
from pyro_deepgen.models._common import LIKELIHOODS, check_scale, observation_dist, out_dim
from pyro_deepgen.nn import MLP, NormalEncoder

__all__ = ["VAE", "LIKELIHOODS"]


class VAE(nn.Module):
    r"""Variational autoencoder: ``p(z) = N(0, I)``, ``p(x|z)`` a decoder network,
    and an amortized diagonal-Gaussian guide ``q(z|x)``, optionally followed
    by a normalizing flow (:class:`~pyro_deepgen.guides.FlowGuide`).

    Kingma & Welling, "Auto-Encoding Variational Bayes", 2014, arXiv:1312.6114;
    Rezende, Mohamed & Wierstra, "Stochastic Backpropagation and Approximate
    Inference in Deep Generative Models", 2014, arXiv:1401.4082.

    ``model(x)`` and ``guide(x)`` follow the pyro_deepgen convention: latent site
    ``"z"``, observed site ``"x"``, every site under ``pyro.plate("data", dim=-1)``,
    and both vectorize over an outer particle plate.

    :param x_dim: number of features of x.
    :param z_dim: latent dimension.
    :param hidden: hidden layer widths of the encoder; the decoder mirrors them.
    :param likelihood: ``"bernoulli"`` (x in {0, 1}) or ``"gaussian"`` (a
        diagonal Normal with a per-pixel scale from the decoder).
    :param decoder_scale: with ``likelihood="gaussian"``, a fixed scale of
        ``p(x|z)`` instead of the learned one (``None``).
    :param activation: hidden nonlinearity (see :data:`pyro_deepgen.nn.ACTIVATIONS`).
    :param name: prefix of the ``pyro.module`` names: the model registers
        ``name.decoder``, the guide ``name.encoder``, so that objectives that
        treat model and guide parameters differently can tell them apart.
    :param flow: ``None`` (the diagonal guide) or a flow of
        :data:`pyro_deepgen.guides.FLOWS` (``"planar"``, ``"radial"``,
        ``"sylvester"``, ``"iaf"``, ``"coupling"``, ``"householder"``) applied to
        the encoder's Gaussian, with the encoder's last hidden layer as context.
        The flow's parameters sit with the encoder's in ``name.encoder``.
    :param num_flows: the number of flow transforms.
    :param hvi: the number of Hamiltonian transitions that refine the guide's sample
        (Hamiltonian variational inference, :class:`~pyro_deepgen.guides.HamiltonianGuide`);
        0 for none. Its networks register as ``name.hvi``.
    :param hvi_leapfrog: leapfrog steps per Hamiltonian transition.

    Example:
        >>> import pyro
        >>> from pyro.infer import SVI, Trace_ELBO
        >>> vae = VAE(x_dim=64, z_dim=2, hidden=(32,))
        >>> svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
        >>> loss = svi.step(torch.bernoulli(torch.full((8, 64), 0.5)))
        >>> flow_vae = VAE(x_dim=64, z_dim=2, hidden=(32,), flow="planar", num_flows=4)
        >>> svi = SVI(flow_vae.model, flow_vae.guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
        >>> loss = svi.step(torch.bernoulli(torch.full((8, 64), 0.5)))
        >>> hvi_vae = VAE(x_dim=64, z_dim=2, hidden=(32,), hvi=1)
        >>> svi = SVI(hvi_vae.model, hvi_vae.guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
        >>> loss = svi.step(torch.bernoulli(torch.full((8, 64), 0.5)))
    """

    def __init__(
        self,
        x_dim: int,
        z_dim: int = 50,
        hidden: Sequence[int] = (200, 200),
        likelihood: str = "bernoulli",
        activation: str = "tanh",
        name: str = "vae",
        flow: str | None = None,
        num_flows: int = 4,
        hvi: int = 0,
        hvi_leapfrog: int = 5,
        decoder_scale: float | None = None,
    ):
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ValueError(
                f"unknown likelihood {likelihood!r}; valid: {', '.join(LIKELIHOODS)}"
            )
        check_scale(likelihood, decoder_scale)
        self.decoder_scale = decoder_scale
        if x_dim < 1 or z_dim < 1:
            raise ValueError(f"x_dim and z_dim must be >= 1; got x_dim={x_dim}, z_dim={z_dim}")
        self.x_dim, self.z_dim, self.likelihood, self.name = x_dim, z_dim, likelihood, name
        self.hidden = tuple(hidden)
        self.flow, self.num_flows = flow, num_flows
        # without a flow the module tree (and so the state dict) is exactly the diagonal VAE's
        encoder = NormalEncoder(x_dim, self.hidden, z_dim, activation)
        self.encoder: nn.Module = encoder if flow is None else FlowGuide(
            encoder, z_dim, flow=flow, num_flows=num_flows, name=f"{name}.encoder")
        self.decoder = MLP(z_dim, tuple(reversed(self.hidden)), out_dim(x_dim, likelihood, decoder_scale),
                           activation)
        if hvi < 0:
            raise ValueError(f"hvi (Hamiltonian transitions) must be >= 0; got {hvi}")
        self.hvi = hvi
        if hvi:
            self.hamiltonian = HamiltonianGuide(self.base_guide, self.model, x_dim, z_dim,
                                                num_transitions=hvi, num_leapfrog=hvi_leapfrog,
                                                name=f"{name}.hvi")

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 2 or x.shape[-1] != self.x_dim:
            raise ValueError(
                f"{type(self).__name__} expects x of shape (batch, {self.x_dim}); "
                f"got {tuple(x.shape)}"
            )

    def _check_binary(self, x: torch.Tensor) -> None:
        if self.likelihood == "bernoulli" and not bool(((x == 0) | (x == 1)).all()):
            bad = x[(x != 0) & (x != 1)][0].item()
            raise ValueError(
                f"{type(self).__name__}(likelihood='bernoulli') expects x with values in {{0, 1}}; "
                f"got a value {bad:.4g}. Binarize the data "
                "(load_dataset(..., binarize='dynamic' or 'static')) or use likelihood='gaussian'."
            )

    def likelihood_dist(self, z: torch.Tensor) -> dist.TorchDistribution:
        """The distribution ``p(x|z)``, with event dimension 1."""
        return observation_dist(self.decoder(z), self.likelihood, self.decoder_scale)

    def model(self, x: torch.Tensor) -> None:
        """``z ~ N(0, I)``, ``x ~ p(x|z)``, for each row of ``x`` under the ``"data"`` plate."""
        self._check(x)
        self._check_binary(x)
        pyro.module(f"{self.name}.decoder", self.decoder)
        with pyro.plate("data", x.shape[0], dim=-1):
            prior = dist.Normal(x.new_zeros(self.z_dim), x.new_ones(self.z_dim)).to_event(1)
            z = pyro.sample("z", prior)
            pyro.sample("x", self.likelihood_dist(z), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        """:meth:`base_guide`, refined by the Hamiltonian transitions if there are any."""
        if self.hvi:
            self.hamiltonian(x)
        else:
            self.base_guide(x)

    def base_guide(self, x: torch.Tensor) -> None:
        """``z ~ N(loc(x), diag(scale(x)^2))`` from the encoder, pushed through the
        flow if there is one, under the ``"data"`` plate."""
        self._check(x)
        pyro.module(f"{self.name}.encoder", self.encoder)  # with a flow: encoder and flow
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", self.guide_dist(x))

    def guide_dist(self, x: torch.Tensor) -> dist.TorchDistribution:
        """``q(z|x)`` of :meth:`base_guide` (without the Hamiltonian transitions),
        with batch shape ``(batch,)`` and event shape ``(z_dim,)``."""
        if self.flow is not None:
            return self.encoder.distribution(x)
        loc, scale = self.encoder(x)
        return dist.Normal(loc, scale).to_event(1)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The mean of ``p(x|z)``."""
        return self.likelihood_dist(z).mean

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """Means of ``p(x|z)`` for ``n`` draws of ``z`` from the prior."""
        p = next(self.parameters())
        return self.decode(torch.randn(n, self.z_dim, device=p.device, dtype=p.dtype))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decoder mean at the guide's mean ``E_q[z|x]`` (with a flow, at the
        flow applied to the encoder's mean, :meth:`pyro_deepgen.guides.FlowGuide.location`)."""
        self._check(x)
        if self.flow is not None:
            return self.decode(self.encoder.location(x))
        return self.decode(self.encoder(x)[0])
