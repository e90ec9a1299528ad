"""Reweighted wake-sleep and wake-sleep."""

from __future__ import annotations

from typing import Any, Callable

import torch
from pyro import poutine
from pyro.distributions import Unit
from pyro.poutine.util import prune_subsample_sites, site_is_subsample

from pyro_deepgen.infer.iwae import log_mean_exp
from pyro_deepgen.infer.objective import Objective, Terms
from pyro_deepgen.infer.weights import LogWeights, data_sites

__all__ = ["RWS", "WakeSleep", "PHI_UPDATES"]

PHI_UPDATES = ("wake", "sleep", "both")


class RWS(Objective):
    r"""Reweighted wake-sleep: with :math:`z_{1..k} \sim q` (no gradient
    through samples) and self-normalized weights :math:`\tilde w_{iu}` per unit
    (per datapoint, or the whole batch when the model has global sites: see
    :class:`~pyro_deepgen.infer.IWAE`),

    * wake-:math:`\theta`: the model follows :math:`s \sum_u \sum_i \tilde w_{iu} \nabla_\theta \log p(x_u, z_{iu})`;
    * wake-:math:`\phi`: the guide follows :math:`s \sum_u \sum_i \tilde w_{iu} \nabla_\phi \log q(z_{iu})`;
    * sleep-:math:`\phi`: the guide follows :math:`\nabla_\phi \log q(z|x)` at a
      dream :math:`(z, x) \sim p`, drawn by running the model with its
      observations unconditioned, the dreamed observations passed to the guide
      in place of the arguments that held the data (one dream per datapoint).

    Log densities carry their sites' scales (and the guide's factors and
    observed sites count in :math:`\log q`). Everything happens in one
    ``loss_and_grads``, so a plain ``SVI.step`` on mini-batches trains both sides
    (Pyro's ``ReweightedWakeSleep`` needs the whole data set). The reported loss
    is the negative IWAE bound. A parameter registered in both the model and
    the guide gets the sum of the two gradients.
    Bornschein & Bengio, "Reweighted Wake-Sleep", 2015, arXiv:1406.2751.

    :param num_particles: k >= 2.
    :param phi: which guide update: ``"wake"``, ``"sleep"`` or ``"both"`` (summed).
    :param options: Pyro's ``ELBO`` options and ``data_plate`` (see
        :class:`~pyro_deepgen.infer.Objective`).

    Example:
        >>> import pyro
        >>> from pyro.infer import SVI
        >>> from pyro_deepgen.models import VAE
        >>> vae = VAE(x_dim=64, z_dim=2, hidden=(32,))
        >>> svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), RWS(num_particles=5))
        >>> loss = svi.step(torch.bernoulli(torch.full((8, 64), 0.5)))
    """

    min_particles = 2
    shared_params = True

    def __init__(self, num_particles: int = 5, phi: str = "wake", **options: Any):
        if phi not in PHI_UPDATES:
            raise ValueError(f"unknown phi update {phi!r}; valid: {', '.join(PHI_UPDATES)}")
        super().__init__(num_particles, **options)
        self.phi = phi

    def _sleep(self, model: Callable, guide: Callable, args: tuple, kwargs: dict,
               w: LogWeights) -> torch.Tensor:
        r""":math:`\log q(z|x)` at a dream :math:`(z, x) \sim p` (on the wake phase's
        subsample), with the sites' scales."""
        model_trace = w.model_trace
        factors = [s["name"] for s in model_trace.nodes.values()
                   if s["type"] == "sample" and isinstance(s["fn"], Unit)]
        if factors:
            raise ValueError(
                f"{type(self).__name__}'s sleep phase draws (z, x) from the model by running it "
                f"forward, which cannot follow the pyro.factor sites {factors}; use phi='wake'")
        with torch.no_grad():
            dream = poutine.trace(poutine.uncondition(poutine.replay(model, trace=w.subsamples))
                                  ).get_trace(*args, **kwargs)
        new_args, new_kwargs = list(args), dict(kwargs)
        indices = [s["value"] for s in w.subsamples.nodes.values()]
        for site in data_sites(model_trace):
            value = dream.nodes[site["name"]]["value"].detach()
            if not _substitute(site["value"], value, args, kwargs, new_args, new_kwargs, indices):
                raise ValueError(
                    f"{type(self).__name__}'s sleep phase passes the dreamed observation of site "
                    f"{site['name']!r} to the guide in place of the data it observes, but no argument "
                    "of the model holds that data (it is closed over, or computed from the arguments "
                    "other than by a view or a subsample); pass the data as an argument, or use "
                    "phi='wake'")
        guide_trace = poutine.trace(poutine.replay(guide, trace=dream)).get_trace(
            *new_args, **new_kwargs)
        return prune_subsample_sites(guide_trace).log_prob_sum()

    def _terms(self, model: Callable, guide: Callable, args: tuple, kwargs: dict) -> Terms:
        w = self._weights(model, guide, args, kwargs, detach_samples=True)
        s = w.scale
        log_w = w.log_w
        weights = torch.softmax(log_w.detach(), dim=0)
        bound = log_mean_exp(log_w.detach())
        model_sur = (weights * w.log_p).sum(0).sum() * s
        guide_sur = torch.zeros(())
        if self.phi in ("wake", "both"):
            guide_sur = guide_sur + (weights * w.log_q).sum(0).sum() * s
        if self.phi in ("sleep", "both"):
            guide_sur = guide_sur + self._sleep(model, guide, args, kwargs, w)
        return Terms(bound=bound.sum() * s, model_surrogate=model_sur,
                     guide_surrogate=guide_sur, weights=w)


def _substitute(data: torch.Tensor, dream: torch.Tensor, args: tuple, kwargs: dict,
                new_args: list, new_kwargs: dict, indices: list) -> bool:
    """Writes ``dream`` into copies of the arguments that hold ``data``: the argument
    itself, a view of its storage (a slice, an element, a reshape), or its entries
    picked by a subsampled plate's ``indices``. Whether any held it."""
    found = False
    for old, new, keys in ((args, new_args, range(len(args))), (kwargs, new_kwargs, list(kwargs))):
        for key in keys:
            written = _written(old[key], new[key], data, dream, indices)
            if written is not None:
                new[key], found = written, True
    return found


def _written(arg, current, data: torch.Tensor, dream: torch.Tensor,
             indices: list) -> torch.Tensor | None:
    """``current`` (``arg``, or a copy with earlier dreams written in) with ``dream``
    written where ``arg`` holds ``data``, or ``None``."""
    if not torch.is_tensor(arg) or arg.dtype != data.dtype or arg.device != data.device:
        return None
    dream = dream.to(arg.dtype).expand(data.shape)
    if arg is data:
        return dream.clone()
    if data.numel() > 0 and arg.untyped_storage().data_ptr() == data.untyped_storage().data_ptr():
        out = current.clone(memory_format=torch.preserve_format)
        offset = data.storage_offset() - arg.storage_offset()
        try:
            out.as_strided(data.shape, data.stride(), out.storage_offset() + offset).copy_(dream)
        except RuntimeError:  # e.g. an expanded view: no one place to write each value
            return None
        return out
    for idx in indices:  # x[idx] under a subsampled plate
        if not torch.is_tensor(idx) or idx.dim() != 1 or idx.numel() == 0:
            continue
        top = int(idx.max())
        for d in range(arg.dim()):
            if arg.shape[d] > top:
                picked = arg.index_select(d, idx)
                if picked.shape == data.shape and torch.equal(picked, data):
                    return current.index_copy(d, idx, dream)
    return None


class WakeSleep(RWS):
    r"""The wake-sleep algorithm: one sample, the wake gradient
    :math:`\nabla_\theta \log p(x, z)` for the model and the sleep gradient
    :math:`\nabla_\phi \log q(z|x)` at dreamed :math:`(z, x) \sim p` for the guide
    (see :class:`RWS` for how the dreams reach the guide).
    The reported loss is the negative ELBO.

    Hinton, Dayan, Frey & Neal, "The wake-sleep algorithm for unsupervised
    neural networks", Science, 1995.

    Example:
        >>> import pyro
        >>> from pyro.infer import SVI
        >>> from pyro_deepgen.models import VAE
        >>> vae = VAE(x_dim=64, z_dim=2, hidden=(32,))
        >>> svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), WakeSleep())
        >>> loss = svi.step(torch.bernoulli(torch.full((8, 64), 0.5)))
    """

    min_particles = 1

    def __init__(self, num_particles: int = 1, **options: Any):
        super().__init__(num_particles, phi="sleep", **options)

    def _terms(self, model: Callable, guide: Callable, args: tuple, kwargs: dict) -> Terms:
        t = super()._terms(model, guide, args, kwargs)
        t.bound = t.weights.log_w.detach().mean(0).sum() * t.weights.scale
        return t
