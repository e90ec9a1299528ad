"""Neural variational inference and learning."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from pyro_deepgen.infer.reinforce import Reinforce

__all__ = ["NVIL"]


class NVIL(Reinforce):
    r"""The score-function ELBO with NVIL's variance reduction: the signal is
    centred by a decaying average *and* an input-dependent baseline network
    :math:`b(x)`, then divided by :math:`\max(1, \hat\sigma)`, a decaying
    estimate of its standard deviation.

    Mnih & Gregor, "Neural Variational Inference and Learning in Belief
    Networks", 2014, arXiv:1402.0030.

    Works with any valid Pyro model, as :class:`~pyro_deepgen.infer.Reinforce`
    does; ``b(x)`` reads each datapoint's observed values (or ``baseline_input``).

    :param decay: decay of the running mean and variance (the paper uses 0.8).
    :param baseline_net: ``b(x)``; default one hidden layer of ``hidden`` units.
    :param baseline_input: ``fn(*args, **kwargs)`` giving ``b``'s input, one row per
        datapoint (default: the model trace's observed values, or a constant when
        there are none).
    :param options: Pyro's ``ELBO`` options and ``data_plate`` (see
        :class:`~pyro_deepgen.infer.Objective`).

    Example:
        >>> import pyro
        >>> from pyro.infer import SVI
        >>> from pyro_deepgen.models import VAE
        >>> vae = VAE(x_dim=64, z_dim=2, hidden=(32,))
        >>> svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), NVIL())
        >>> loss = svi.step(torch.bernoulli(torch.full((8, 64), 0.5)))
    """

    centre_average = True
    centre_nn = True
    normalize = True

    def __init__(self, num_particles: int = 1, decay: float = 0.8, baseline_net: nn.Module | None = None,
                 hidden: int = 100, normalize: bool = True, name: str | None = None,
                 baseline_input: Callable[..., torch.Tensor] | None = None, **options: Any):
        super().__init__(num_particles, baseline="nn", decay=decay, baseline_net=baseline_net,
                         hidden=hidden, name=name, baseline_input=baseline_input, **options)
        self.normalize = normalize
