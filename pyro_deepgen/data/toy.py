r"""The four 2-D test energies of Rezende & Mohamed (2015), Fig. 3 and Table 1.

Rezende & Mohamed, "Variational Inference with Normalizing Flows", 2015,
arXiv:1505.05770. Each defines an unnormalized density :math:`\exp(-U(z))` on
:math:`z \in \mathbb R^2`, with :math:`w_1 = \sin(2\pi z_1/4)`,
:math:`w_2 = 3\exp(-\tfrac12((z_1-1)/0.6)^2)` and :math:`w_3 = 3\,\sigma((z_1-1)/0.3)`.

**Normalizability.** ``U1`` is a proper density on the plane, but ``U2``-``U4``
do not depend on :math:`z_1` except through the periodic :math:`w_1` (and the
bounded :math:`w_2, w_3`), so :math:`\int \exp(-U) = \infty`; the paper shows
them on the square :math:`[-4, 4]^2`. :func:`log_normalizer`, :func:`energy_model`
(and so the fits of :func:`pyro_deepgen.guides.fit_energy`) therefore use the
*walled* energy

.. math:: U_W(z) = U(z) + \sum_{i=1}^2 \tfrac12\big(\max(|z_i| - b, 0)/s\big)^2,

with ``bound`` :math:`b = 4` and ``wall`` :math:`s = 0.4` by default: flat
inside the square, with Gaussian walls outside it. It is proper for all four,
changes ``U1``'s :math:`\log Z` by less than :math:`10^{-6}`, and makes the
reverse KL well defined, so that ELBO :math:`\le \log Z` holds. ``wall=None``
gives the raw energy restricted to the square (the hard box).

This module holds the targets only (it is data, and imports nothing above
:mod:`pyro_deepgen.data`); fitting a flow to them is
:func:`pyro_deepgen.guides.fit_energy`.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

__all__ = [
    "BOUND",
    "ENERGIES",
    "WALL",
    "DensityGrid",
    "density_grid",
    "energy",
    "energy_model",
    "energy_name",
    "log_normalizer",
    "walled_energy",
]

ENERGIES = ("U1", "U2", "U3", "U4")
BOUND = 4.0
WALL = 0.4


def energy_name(name: str | int) -> str:
    """The canonical name (``"U1"``-``"U4"``) of energy ``name`` (a name in any case, or 1-4).

    Example:
        >>> energy_name("u3"), energy_name(2)
        ('U3', 'U2')
    """
    key = f"U{name}" if isinstance(name, int) and not isinstance(name, bool) else str(name).upper()
    if key not in ENERGIES:
        raise ValueError(f"unknown energy {name!r}; valid: {', '.join(ENERGIES)} (or 1-4)")
    return key


def _sq(x: torch.Tensor, s: float) -> torch.Tensor:
    return 0.5 * (x / s) ** 2


def energy(name: str | int, z: torch.Tensor) -> torch.Tensor:
    r"""``U(z)`` of energy ``name`` (``"U1"``-``"U4"`` or 1-4) for ``z`` of shape
    ``(..., 2)``; returns shape ``(...)``. Exactly Table 1 of Rezende & Mohamed
    (2015, arXiv:1505.05770); the log-sum-exps are computed stably.

    Example:
        >>> energy("U2", torch.zeros(3, 2))
        tensor([0., 0., 0.])
    """
    key = energy_name(name)
    if z.shape[-1:] != (2,):
        raise ValueError(f"energy expects z of shape (..., 2); got {tuple(z.shape)}")
    z1, z2 = z[..., 0], z[..., 1]
    w1 = torch.sin(2 * math.pi * z1 / 4)
    if key == "U1":
        ring = _sq(z.norm(dim=-1) - 2, 0.4)
        return ring - torch.logaddexp(-_sq(z1 - 2, 0.6), -_sq(z1 + 2, 0.6))
    if key == "U2":
        return _sq(z2 - w1, 0.4)
    if key == "U3":
        w2 = 3 * torch.exp(-_sq(z1 - 1, 0.6))
        return -torch.logaddexp(-_sq(z2 - w1, 0.35), -_sq(z2 - w1 + w2, 0.35))
    w3 = 3 * torch.sigmoid((z1 - 1) / 0.3)
    return -torch.logaddexp(-_sq(z2 - w1, 0.4), -_sq(z2 - w1 + w3, 0.35))


def walled_energy(name: str | int, z: torch.Tensor, bound: float = BOUND,
                  wall: float | None = WALL) -> torch.Tensor:
    """``U(z)`` plus the Gaussian walls outside ``[-bound, bound]^2`` (see the
    module docstring); ``wall=None``: ``U(z)`` inside the square, ``inf`` outside."""
    u = energy(name, z)
    outside = (z.abs() - bound).clamp(min=0)
    if wall is None:
        return torch.where((outside > 0).any(-1), torch.full_like(u, math.inf), u)
    if wall <= 0:
        raise ValueError(f"wall must be > 0 (or None for a hard box); got {wall}")
    return u + _sq(outside, wall).sum(-1)


def _grid(lo: float, hi: float, resolution: int, dtype=torch.float64) -> tuple[torch.Tensor, float]:
    h = (hi - lo) / resolution
    return lo + h * (torch.arange(resolution, dtype=dtype) + 0.5), h


def log_normalizer(name: str | int, bound: float = BOUND, wall: float | None = WALL,
                   resolution: int = 2000, extent: float | None = None) -> float:
    r""":math:`\log Z = \log \int \exp(-U_W(z))\,dz` by the midpoint rule on a
    ``resolution x resolution`` grid of cells over ``[-extent, extent]^2``, in
    float64.

    The default ``extent`` is ``bound + 8 * wall``: beyond it the wall alone
    is at least 32 nats, so the mass left out is below :math:`e^{-32}` of the
    total. With ``wall=None`` the integral is over the square
    ``[-bound, bound]^2``, whose edges fall on cell edges. At the default
    resolution the cell width is about 0.006, and halving it changes
    :math:`\log Z` by less than :math:`10^{-5}` (tested to :math:`10^{-3}`).

    Example:
        >>> round(log_normalizer("U2", wall=None), 4)  # log(8 * 0.4 * sqrt(2 pi))
        2.0821
    """
    if resolution < 2:
        raise ValueError(f"resolution must be >= 2; got {resolution}")
    if extent is None:
        extent = bound if wall is None else bound + 8 * wall
    c, h = _grid(-extent, extent, resolution)
    total = []
    for rows in c.split(max(1, 2_000_000 // resolution)):  # bounded memory
        z = torch.stack(torch.meshgrid(rows, c, indexing="ij"), -1)
        total.append(torch.logsumexp(-walled_energy(name, z, bound, wall).reshape(-1), 0))
    return float(torch.logsumexp(torch.stack(total), 0) + 2 * math.log(h))


def energy_model(name: str | int, beta: float = 1.0, bound: float = BOUND,
                 wall: float | None = WALL) -> None:
    r"""The target as a Pyro model for reverse-KL fitting: ``z`` from an
    improper flat prior and ``pyro.factor("U", -beta * U_W(z))``. With any
    guide ``q(z)`` for site ``"z"``, the ELBO is
    :math:`\mathbb E_q[-U_W(z) - \log q(z)] = \log Z - \mathrm{KL}(q \| p)` at
    ``beta = 1``; ``beta < 1`` anneals the energy as in the paper.

    Example:
        >>> import pyro
        >>> from pyro.infer import Trace_ELBO
        >>> from pyro_deepgen.guides import Flow
        >>> q = Flow(2, "planar", num_flows=2)
        >>> loss = Trace_ELBO().loss(energy_model, q.guide, "U1")
    """
    z = pyro.sample("z", dist.ImproperUniform(constraints.real_vector, (), (2,)))
    pyro.factor("U", -beta * walled_energy(name, z, bound, wall))


class DensityGrid(NamedTuple):
    """A density on a square grid: ``density[i, j]`` at ``(z1, z2) = (x[j], y[i])``,
    ready for ``imshow(density, origin="lower", extent=extent)``."""

    x: np.ndarray
    y: np.ndarray
    density: np.ndarray
    extent: tuple[float, float, float, float]


@torch.no_grad()
def density_grid(source: str | int | Any, bound: float = BOUND, resolution: int = 200,
                 num_samples: int = 200_000, wall: float | None = WALL) -> DensityGrid:
    """The paper-style density picture on ``[-bound, bound]^2``.

    ``source`` is an energy name (the normalized target :math:`\\exp(-U_W)/Z`
    at the cell centres), or a distribution, or anything with a
    ``distribution()`` method, such as a :class:`~pyro_deepgen.guides.Flow` or
    the :class:`~pyro_deepgen.guides.EnergyFit` of
    :func:`~pyro_deepgen.guides.fit_energy` (a histogram of ``num_samples``
    draws, normalized so that it integrates to the mass inside the square;
    flows without an inverse cannot be evaluated at arbitrary points).

    Example:
        >>> g = density_grid("U1", resolution=50)
        >>> g.density.shape, round(float(g.density.sum() * (8 / 50) ** 2), 3)
        ((50, 50), 1.0)
    """
    c, h = _grid(-bound, bound, resolution)
    extent = (-bound, bound, -bound, bound)
    if isinstance(source, (str, int)):
        z = torch.stack(torch.meshgrid(c, c, indexing="xy"), -1)  # z[i, j] = (c[j], c[i])
        log_z = log_normalizer(source, bound=bound, wall=wall)
        dens = torch.exp(-walled_energy(source, z, bound, wall) - log_z)
        return DensityGrid(c.numpy(), c.numpy(), dens.numpy(), extent)
    q = source.distribution() if hasattr(source, "distribution") else source
    z = q.sample((num_samples,)).reshape(-1, 2).double().numpy()
    edges = np.linspace(-bound, bound, resolution + 1)
    hist, _, _ = np.histogram2d(z[:, 1], z[:, 0], bins=[edges, edges])  # rows: z2
    return DensityGrid(c.numpy(), c.numpy(), hist / (len(z) * h * h), extent)
