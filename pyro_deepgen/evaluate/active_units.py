"""Active latent units."""

from __future__ import annotations

from typing import Callable, NamedTuple

import pyro
import torch
from pyro import poutine
from torch.utils.data import Dataset

from pyro_deepgen.evaluate.batches import guide_site, iterate_batches, model_args

__all__ = ["ActiveUnits", "active_units"]


class ActiveUnits(NamedTuple):
    """``num_active`` units of ``variance.numel()``, each with
    ``variance[i] = Cov_x(E_q[z_i|x])``."""

    num_active: int
    variance: torch.Tensor


def _posterior_mean(guide: Callable, args: tuple, site: str,
                    num_samples: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``E_q[z|x]`` per datapoint, and for a Monte Carlo mean the variance of
    that estimate per datapoint (``None`` when exact)."""
    fn = guide_site(guide, args, site)["fn"]
    try:
        return fn.mean, None
    except NotImplementedError:
        plate = pyro.plate("particles", num_samples, dim=-2)
        z = poutine.trace(plate(guide)).get_trace(*args).nodes[site]["value"]
        return z.mean(0), z.var(0) / num_samples


@torch.no_grad()
def active_units(
    guide: Callable,
    dataset: Dataset,
    site: str = "z",
    threshold: float = 0.01,
    batch_size: int = 500,
    num_samples: int = 100,
    pass_labels: bool = False,
    device: torch.device | str | None = None,
) -> ActiveUnits:
    r"""Counts the units ``i`` of latent ``site`` with
    :math:`\mathrm{Cov}_x(\mathbb{E}_{q(z|x)}[z_i]) > \text{threshold}`
    (Burda, Grosse & Salakhutdinov 2016, arXiv:1509.00519, section 5.2).

    The guide's mean is exact where its distribution has ``.mean``, else the
    average of ``num_samples`` draws; the variance of that average (its noise,
    about ``Var_q[z_i|x] / num_samples``) is then subtracted, so that a unit whose
    posterior is the prior does not count as active through noise alone.
    """
    means, noise = [], []
    for b in iterate_batches(dataset, batch_size):
        m, v = _posterior_mean(guide, model_args(b, pass_labels, device), site, num_samples)
        means.append(m.cpu())
        if v is not None:
            noise.append(v.cpu())
    m = torch.cat(means).reshape(len(dataset), -1)
    var = m.var(dim=0, unbiased=False) if m.shape[0] > 1 else torch.zeros(m.shape[1])
    if noise:
        var = (var - torch.cat(noise).reshape(len(dataset), -1).mean(0)).clamp(min=0)
    return ActiveUnits(int((var > threshold).sum()), var)
