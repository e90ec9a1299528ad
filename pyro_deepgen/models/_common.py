"""Small pieces shared by the models (VAE, M2, CVAE, DLGM)."""

from __future__ import annotations

import math
from typing import Sequence

import pyro.distributions as dist
import torch
from torch import nn
from torch.nn.functional import softplus

from pyro_deepgen.distributions import IndependentBernoulli
from pyro_deepgen.nn import MLP, NormalEncoder

LIKELIHOODS = ("bernoulli", "gaussian")


def check_likelihood(likelihood: str) -> None:
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {likelihood!r}; valid: {', '.join(LIKELIHOODS)}")


def out_dim(x_dim: int, likelihood: str, scale: float | None = None) -> int:
    """Decoder outputs for ``x_dim`` features: logits, a location (a fixed
    ``scale``), or a location and a raw scale."""
    return x_dim if likelihood == "bernoulli" or scale is not None else 2 * x_dim


def check_scale(likelihood: str, scale: float | None) -> None:
    """A fixed decoder scale is positive and only for the Gaussian likelihood."""
    if scale is None:
        return
    if likelihood != "gaussian":
        raise ValueError(f"decoder_scale is for likelihood='gaussian'; got likelihood={likelihood!r}")
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"decoder_scale must be a finite number > 0; got {scale!r}")


def observation_dist(out: torch.Tensor, likelihood: str,
                     scale: float | None = None) -> dist.TorchDistribution:
    """``p(x|...)`` from a decoder's output, with event dimension 1: independent
    Bernoulli with logits ``out``, or a diagonal Normal with location ``out`` and
    the fixed ``scale``, or with scale ``softplus(raw) + 1e-3`` (a learned
    variance)."""
    if likelihood == "bernoulli":
        return IndependentBernoulli(out, validate_args=False)
    if scale is not None:
        return dist.Normal(out, torch.full_like(out, scale)).to_event(1)
    loc, raw_scale = out.chunk(2, dim=-1)
    return dist.Normal(loc, softplus(raw_scale) + 1e-3).to_event(1)


def check_x(model: nn.Module, x: torch.Tensor, x_dim: int, what: str = "x") -> None:
    if not torch.is_tensor(x) or x.dim() != 2 or x.shape[-1] != x_dim:
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"{type(model).__name__} expects {what} of shape (batch, {x_dim}); got {shape}")


def check_binary(model: nn.Module, x: torch.Tensor, likelihood: str) -> None:
    if likelihood == "bernoulli" and not bool(((x == 0) | (x == 1)).all()):
        bad = x[(x != 0) & (x != 1)][0].item()
        raise ValueError(
            f"{type(model).__name__}(likelihood='bernoulli') expects x with values in {{0, 1}}; got "
            f"a value {bad:.4g}. Binarize the data or use likelihood='gaussian'.")


def cat(*parts: torch.Tensor) -> torch.Tensor:
    """Concatenates along the last dimension after broadcasting the batch
    dimensions (an enumerated label against a batch of images, say)."""
    shape = torch.broadcast_shapes(*(p.shape[:-1] for p in parts))
    return torch.cat([p.expand(shape + p.shape[-1:]) for p in parts], dim=-1)


class _LinearNormal(nn.Module):
    """``x -> (W x + b, softplus(V x + c) + min_scale)``: a Normal encoder
    without hidden layers (linear-Gaussian conditionals)."""

    def __init__(self, in_dim: int, out_dim: int, min_scale: float = 1e-4):
        super().__init__()
        self.loc = nn.Linear(in_dim, out_dim)
        self.scale = nn.Linear(in_dim, out_dim)
        self.min_scale, self.out_dim = min_scale, out_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.loc(x), softplus(self.scale(x)) + self.min_scale


def normal_net(in_dim: int, hidden: Sequence[int], z_dim: int, activation: str) -> nn.Module:
    """A :class:`~pyro_deepgen.nn.NormalEncoder`, or with ``hidden=()`` its linear version."""
    hidden = tuple(hidden)
    return NormalEncoder(in_dim, hidden, z_dim, activation) if hidden else _LinearNormal(in_dim, z_dim)


def mlp(in_dim: int, hidden: Sequence[int], out: int, activation: str) -> MLP:
    return MLP(in_dim, tuple(hidden), out, activation)
