"""A conjugate linear-Gaussian model/guide pair with closed-form answers.

p(z) = N(0, I), p(x|z) = N(W z + b, sigma^2 I), guide q(z|x) = N(A x + c, diag(s^2)).
The guide starts at the exact posterior; W has orthogonal columns so that it is diagonal.
The model registers ``dec`` (W, b) and the guide ``enc`` (A, c, log_s).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn


class LinearGaussian(nn.Module):
    def __init__(self, x_dim: int = 3, z_dim: int = 2, sigma: float = 0.7, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.x_dim, self.z_dim = x_dim, z_dim
        self.sigma = sigma
        q, _ = torch.linalg.qr(torch.randn(x_dim, z_dim, generator=g, dtype=torch.float64))
        d = 0.5 + torch.rand(z_dim, generator=g, dtype=torch.float64)
        self.dec = nn.ParameterDict({
            "W": nn.Parameter((q * d).contiguous()),
            "b": nn.Parameter(0.3 * torch.randn(x_dim, generator=g, dtype=torch.float64)),
        })
        A, c, s = self.exact_posterior_params()
        self.enc = nn.ParameterDict({
            "A": nn.Parameter(A.clone()), "c": nn.Parameter(c.clone()),
            "log_s": nn.Parameter(s.log().clone()),
        })

    W = property(lambda self: self.dec["W"])
    b = property(lambda self: self.dec["b"])
    A = property(lambda self: self.enc["A"])
    c = property(lambda self: self.enc["c"])
    log_s = property(lambda self: self.enc["log_s"])

    def shift_guide(self, c: float = 0.0, log_s: float = 0.0) -> "LinearGaussian":
        """Moves the guide off the exact posterior (in place), so that bounds are
        strict and guide gradients are non-zero; returns ``self``."""
        with torch.no_grad():
            self.c.add_(c)
            self.log_s.add_(log_s)
        return self

    def exact_posterior_params(self):
        W, b, s2 = self.W.detach(), self.b.detach(), self.sigma**2
        cov = torch.linalg.inv(torch.eye(self.z_dim, dtype=W.dtype) + W.T @ W / s2)
        A = cov @ W.T / s2
        return A, -A @ b, cov.diagonal().sqrt()

    def exact_log_px(self, x: torch.Tensor) -> torch.Tensor:
        W, b = self.W.detach(), self.b.detach()
        cov = W @ W.T + self.sigma**2 * torch.eye(self.x_dim, dtype=W.dtype)
        return dist.MultivariateNormal(b, cov).log_prob(x)

    def model(self, x):
        pyro.module("lg_dec", self.dec)
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T + self.b, self.sigma).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("lg_enc", self.enc)
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.Normal(x @ self.A.T + self.c, self.log_s.exp()).to_event(1))

    def sample_x(self, n: int, seed: int = 1) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.z_dim, generator=g, dtype=torch.float64)
        noise = torch.randn(n, self.x_dim, generator=g, dtype=torch.float64)
        return (z @ self.W.T + self.b + self.sigma * noise).detach()
