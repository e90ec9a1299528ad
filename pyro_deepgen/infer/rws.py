"""Reweighted wake-sleep and wake-sleep."""

from __future__ import annotations

from typing import Callable

import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites

from pyro_deepgen.infer.iwae import log_mean_exp
from pyro_deepgen.infer.objective import Objective, Terms
from pyro_deepgen.infer.weights import _Reducer, _data_frame

__all__ = ["RWS", "WakeSleep", "PHI_UPDATES"]

PHI_UPDATES = ("wake", "sleep", "both")


class RWS(Objective):
    r"""Reweighted wake-sleep: with :math:`z_{1..k} \sim q(z|x)` (no gradient
    through samples) and self-normalized weights :math:`\tilde w_i`,

    * wake-:math:`\theta`: the model follows :math:`\sum_i \tilde w_i \nabla_\theta \log p(x, z_i)`;
    * wake-:math:`\phi`: the guide follows :math:`\sum_i \tilde w_i \nabla_\phi \log q(z_i|x)`;
    * sleep-:math:`\phi`: the guide follows :math:`\nabla_\phi \log q(z|x)` at a
      dream :math:`(z, x) \sim p`, drawn by running the model with its
      observations unconditioned, one dream per datapoint of the batch.

    Everything happens in one ``loss_and_grads``, so a plain ``SVI.step`` on
    mini-batches trains both sides (Pyro's ``ReweightedWakeSleep`` needs the
    whole data set). The reported loss is the negative IWAE bound.
    Bornschein & Bengio, "Reweighted Wake-Sleep", 2015, arXiv:1406.2751.

    :param num_particles: k >= 2.
    :param phi: which guide update: ``"wake"``, ``"sleep"`` or ``"both"`` (summed).

    Example:
        >>> import pyro
        >>> from pyro.infer import SVI
        >>> from pyro_deepgen.models import VAE
        >>> vae = VAE(x_dim=64, z_dim=2, hidden=(32,))
        >>> svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), RWS(num_particles=5))
        >>> loss = svi.step(torch.bernoulli(torch.full((8, 64), 0.5)))
    """

    min_particles = 2

    def __init__(self, num_particles: int = 5, phi: str = "wake", max_plate_nesting: int = 1):
        if phi not in PHI_UPDATES:
            raise ValueError(f"unknown phi update {phi!r}; valid: {', '.join(PHI_UPDATES)}")
        super().__init__(num_particles, max_plate_nesting)
        self.phi = phi

    def _sleep(self, model: Callable, guide: Callable, args: tuple, kwargs: dict,
               observed: list[str]) -> torch.Tensor:
        """Sum over a dreamed batch of ``log q(z|x)`` at ``(z, x) ~ p``."""
        name = "x" if "x" in observed else (observed[0] if len(observed) == 1 else None)
        if name is None:
            raise ValueError(f"sleep needs one observed site to dream, or one named 'x'; got {observed}")
        with torch.no_grad():
            dream = poutine.trace(poutine.uncondition(model)).get_trace(*args, **kwargs)
        x_dream = dream.nodes[name]["value"].detach().reshape(args[0].shape)
        guide_trace = prune_subsample_sites(poutine.trace(poutine.replay(guide, trace=dream)).get_trace(
            x_dream, *args[1:], **kwargs))
        total = torch.zeros(())
        for site in guide_trace.nodes.values():
            if site["type"] == "sample" and not site["is_observed"]:
                frame = _data_frame(site, "data")
                scale = (frame.full_size or frame.size) / frame.size
                reduce = _Reducer(1, frame.size, self.max_plate_nesting, frame.dim, scale, True, "data")
                total = total + reduce(site).sum() * scale
        return total

    def _terms(self, model: Callable, guide: Callable, args: tuple, kwargs: dict) -> Terms:
        w = self._weights(model, guide, args, kwargs, detach_samples=True)
        log_w = w.log_w
        weights = torch.softmax(log_w.detach(), dim=0)
        bound = log_mean_exp(log_w.detach())
        model_sur = (weights * w.log_p).sum(0).sum() * w.scale
        guide_sur = torch.zeros(())
        if self.phi in ("wake", "both"):
            guide_sur = guide_sur + (weights * w.log_q).sum(0).sum() * w.scale
        if self.phi in ("sleep", "both"):
            observed = [n for n, site in w.model_trace.nodes.items()
                        if site["type"] == "sample" and site["is_observed"]]
            guide_sur = guide_sur + self._sleep(model, guide, args, kwargs, observed)
        return Terms(bound=bound.sum() * w.scale, model_surrogate=model_sur,
                     guide_surrogate=guide_sur, weights=w)


class WakeSleep(RWS):
    r"""The wake-sleep algorithm: one sample per datapoint, the wake gradient
    :math:`\nabla_\theta \log p(x, z)` for the model and the sleep gradient
    :math:`\nabla_\phi \log q(z|x)` at dreamed :math:`(z, x) \sim p` for the guide.
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

    def __init__(self, num_particles: int = 1, max_plate_nesting: int = 1):
        super().__init__(num_particles, phi="sleep", max_plate_nesting=max_plate_nesting)

    def _terms(self, model: Callable, guide: Callable, args: tuple, kwargs: dict) -> Terms:
        t = super()._terms(model, guide, args, kwargs)
        t.bound = t.weights.log_w.detach().mean(0).sum() * t.weights.scale
        return t
