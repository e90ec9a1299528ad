r"""Path-derivative log densities: ``log q(z)`` whose gradient flows only through ``z``.

STL and DReG drop the score term :math:`\nabla_\phi \log q_\phi(z)|_z` and keep
the path derivative :math:`\partial_z \log q_\phi(z)\, \partial_\phi z`.

For most distributions the score at fixed ``z`` is ``log_prob(z.detach())``.
Flows without an analytic inverse (planar, radial, Sylvester) can only score
the exact tensor they produced, so for a ``TransformedDistribution`` (also
inside ``Independent``) the gradient :math:`g_z = \partial_z \log q(z)` is
computed from the base sample :math:`\epsilon` instead, recovered through the
transforms' caches: with :math:`f(\epsilon) = \log q(T(\epsilon))` and
:math:`J = \partial T / \partial \epsilon`, :math:`\nabla_\epsilon f = J^\top g_z`,
so :math:`g_z = J^{-\top} \nabla_\epsilon f`. ``J`` takes one backward pass per
event dimension, which is cheap for the latent sizes of amortized guides.
"""

from __future__ import annotations

from typing import Iterator

import torch
from pyro.distributions import Delta
from pyro.distributions.torch_distribution import TorchDistributionMixin
from torch.distributions import Independent, Transform, TransformedDistribution

__all__ = ["path_log_prob"]


def path_log_prob(fn: TorchDistributionMixin, value: torch.Tensor) -> torch.Tensor:
    """A tensor equal to ``fn.log_prob(value)`` whose gradient with respect to
    ``fn``'s parameters is zero except through ``value``."""
    inner = fn
    while isinstance(inner, Independent):
        inner = inner.base_dist
    if isinstance(inner, TransformedDistribution) and inner.transforms:
        return _flow_path_log_prob(fn, inner, value)
    if isinstance(inner, Delta) and inner.log_density.requires_grad:
        raise ValueError(
            "path_log_prob: a Delta site with a learned log density (e.g. HamiltonianGuide) has no "
            "path derivative of log q; train it with elbo or iwae-K, not STL or DReG")
    lp = fn.log_prob(value)
    score = fn.log_prob(value.detach())  # gradient: the score at fixed value
    return lp - (score - score.detach())


def _walk(t: Transform) -> Iterator[Transform]:
    yield t
    for part in getattr(t, "parts", ()):  # ComposeTransform
        yield from _walk(part)


def _cache_state(transforms: list[Transform]) -> list[tuple[Transform, dict]]:
    """Every transform's cached values (``_cached_x_y``, and e.g. Pyro's cached log-determinants)."""
    return [(t, {k: v for k, v in vars(t).items() if k.startswith("_cached")})
            for top in transforms for t in _walk(top)]


def _flow_path_log_prob(fn: TorchDistributionMixin, flow: TransformedDistribution,
                        value: torch.Tensor) -> torch.Tensor:
    event_dims = len(fn.event_shape)
    if not (torch.is_grad_enabled() and value.requires_grad):
        return fn.log_prob(value).detach()
    saved = _cache_state(flow.transforms)
    try:
        eps = value
        for t in reversed(flow.transforms):
            eps = t.inv(eps)  # a cache hit for the value the flow drew
    except (KeyError, NotImplementedError) as e:
        raise ValueError(
            "path_log_prob: cannot recover the base sample of a flow without an analytic inverse "
            "(planar, radial, Sylvester) for a value it did not draw itself; score the exact "
            "sample tensor the guide returned"
        ) from e
    eps = eps.detach().requires_grad_()
    with torch.enable_grad():
        z = eps
        for t in flow.transforms:
            z = t(z)  # fresh caches, so that log_prob below inverts through them
        if z.shape != value.shape or eps.shape != value.shape:
            raise ValueError(f"path_log_prob: the flow maps {tuple(eps.shape)} to {tuple(z.shape)}; "
                             f"only shape-preserving flows are supported (value {tuple(value.shape)})")
        f = fn.log_prob(z)
        g_eps, = torch.autograd.grad(f.sum(), eps, retain_graph=True)
        n = value.shape[value.dim() - event_dims:].numel() if event_dims else 1
        z_flat = z.reshape(*value.shape[:value.dim() - event_dims], n)
        batch = value.shape[:value.dim() - event_dims]
        jac = _jacobian(z_flat, eps, batch, n)  # jac[..., i, j] = dz_i/deps_j
    for t, cached in saved:  # leave the caches as the guide left them
        vars(t).update(cached)
    g_z = torch.linalg.solve(jac.transpose(-1, -2), g_eps.reshape(*batch, n, 1)).squeeze(-1)
    delta = (value - value.detach()).reshape(*batch, n)
    return f.detach() + (g_z.detach() * delta).sum(-1)


def _jacobian(z: torch.Tensor, eps: torch.Tensor, batch: torch.Size, n: int) -> torch.Tensor:
    """Per-sample Jacobians ``dz/deps`` of shape ``batch + (n, n)``. Each sample's ``z``
    depends on its own ``eps`` only, so the gradient of ``z[..., i].sum()`` holds row ``i``
    of every sample's Jacobian: one vectorized backward pass, or ``n`` plain ones where
    an operation has no batching rule."""
    eye = torch.eye(n, dtype=z.dtype, device=z.device).reshape(n, *(1,) * len(batch), n)
    try:
        rows, = torch.autograd.grad(z, eps, eye.expand(n, *z.shape), retain_graph=True,
                                    is_grads_batched=True)
    except RuntimeError:
        rows = torch.stack([torch.autograd.grad(z[..., i].sum(), eps, retain_graph=True)[0]
                            for i in range(n)])
    return rows.reshape(n, *batch, n).movedim(0, -2)
