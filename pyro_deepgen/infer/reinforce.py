"""The score-function (REINFORCE) ELBO, with baselines."""

from __future__ import annotations

import math
from typing import Any, Callable

import pyro
import torch
from torch import nn

from pyro_deepgen.infer.objective import Objective, Terms
from pyro_deepgen.nn import MLP

__all__ = ["Reinforce", "BASELINES"]

BASELINES = ("none", "average", "nn")


class Reinforce(Objective):
    r"""The ELBO with the score-function gradient for every latent guide site:

    .. math:: \nabla_\phi \mathcal{L} = \mathbb{E}_q\Big[\sum_j (r_j - b_j)\,
              \nabla_\phi \log q_\phi(z_j)\Big],

    with samples detached, so it needs no reparameterization; the model gets
    :math:`\nabla_\theta \log p(x, z)`. The learning signal :math:`r_j` of site
    ``j`` is Pyro's ``Trace_ELBO``'s: the terms of :math:`\log p - \log q` that no
    plate separates from it (with their scales, while :math:`\log q_\phi(z_j)` is
    unscaled). The baseline :math:`b_j` is the datapoint's :math:`b(x)` for sites
    in the data plate (for every site when the model has none), and zero for
    sites outside it. Works with any valid Pyro model. Williams, "Simple statistical
    gradient-following algorithms for connectionist reinforcement learning",
    1992; Paisley, Blei & Jordan, "Variational Bayesian Inference with
    Stochastic Search", 2012, arXiv:1206.6430.

    :param baseline: ``"none"``; ``"average"``, a decaying average of the
        per-datapoint ELBO; or ``"nn"``, a network ``b(x)`` trained by regression
        on it (its parameters are registered as ``<name>.baseline`` and stepped by
        the same optimizer).
    :param decay: the average's decay per step.
    :param baseline_net: the network for ``"nn"`` (default: an MLP with one
        hidden layer of ``hidden`` tanh units, built at the first step).
    :param baseline_input: ``fn(*args, **kwargs)`` giving the network's input,
        one row per datapoint, from the model's arguments. By default the input
        is read from the model trace's observed sites: each datapoint's values of
        the sites in the data plate (all observed values in one row when the
        model has no data plate); a model without observed sites gets a constant
        input, so that ``b`` is a learned constant.
    :param options: Pyro's ``ELBO`` options and ``data_plate`` (see
        :class:`~pyro_deepgen.infer.Objective`).

    Example:
        >>> import pyro
        >>> from pyro.infer import SVI
        >>> from pyro_deepgen.models import VAE
        >>> vae = VAE(x_dim=64, z_dim=2, hidden=(32,))
        >>> svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}),
        ...           Reinforce(baseline="average"))
        >>> loss = svi.step(torch.bernoulli(torch.full((8, 64), 0.5)))
    """

    centre_average = False
    centre_nn = False
    normalize = False
    joint = False

    def __init__(self, num_particles: int = 1, baseline: str = "average", decay: float = 0.9,
                 baseline_net: nn.Module | None = None, hidden: int = 100, name: str | None = None,
                 baseline_input: Callable[..., torch.Tensor] | None = None, **options: Any):
        if baseline not in BASELINES:
            raise ValueError(f"unknown baseline {baseline!r}; valid: {', '.join(BASELINES)}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1); got {decay}")
        if baseline_input is not None and not callable(baseline_input):
            raise ValueError(f"baseline_input must be a callable fn(*args, **kwargs); got {baseline_input!r}")
        super().__init__(num_particles, **options)
        self.baseline_input = baseline_input
        self.baseline = baseline
        self.centre_average = self.centre_average or baseline == "average"
        self.centre_nn = self.centre_nn or baseline == "nn"
        self.decay = decay
        self.baseline_net = baseline_net
        self.hidden = hidden
        self.name = name or type(self).__name__
        self._mean = 0.0  # running averages of the signal and its variance, from earlier steps
        self._var = 1.0
        self._steps = 0
        self._last = None  # (state before the last update, the sums it used)

    def _inputs(self, w, args: tuple, kwargs: dict) -> torch.Tensor:
        """The baseline network's input, one row per unit: the observed values, or
        a constant (a learned baseline per unit, no input) when there are none."""
        if self.baseline_input is None:
            try:
                return w.unit_inputs()
            except ValueError:
                return w.log_p.new_ones((w.units, 1))
        x = self.baseline_input(*args, **kwargs)
        if not torch.is_tensor(x) or x.dim() < 1 or x.shape[0] != w.units:
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"baseline_input must give a tensor with one row per unit ({w.units}: the "
                             f"datapoints of the data plate, or 1 without one); got {shape}")
        return x

    def _baseline(self, x: torch.Tensor) -> torch.Tensor:
        """``b(x)`` for each unit, shape ``(units,)``."""
        flat = x.reshape(x.shape[0], -1)
        if self.baseline_net is None:
            self.baseline_net = MLP(flat.shape[-1], (self.hidden,), 1).to(flat.device, flat.dtype)
        # update_module_params: a network registered under this name before (a checkpoint, or
        # another instance) is the one that the param store and the optimizer hold
        net = pyro.module(f"{self.name}.baseline", self.baseline_net, update_module_params=True)
        return net(flat).squeeze(-1)

    def init_params(self, model: Callable, guide: Callable, *args, **kwargs) -> None:
        if self.centre_nn:
            with torch.no_grad():
                w = self._weights(model, guide, args, kwargs, detach_samples=True)
                self._baseline(self._inputs(w, args, kwargs))

    def get_state(self) -> dict[str, Any]:
        return {**super().get_state(), "mean": self._mean, "var": self._var, "steps": self._steps}

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self._mean, self._var, self._steps = state["mean"], state["var"], state["steps"]

    def sync_state(self, reduce_sum: Callable[[list[float]], list[float]]) -> None:
        """Redoes the last update of the running averages from the signal's sums
        over all processes' batches: the one-process update of the whole batch."""
        if self._last is None:
            return
        before, sums = self._last
        self._mean, self._var, self._steps = before
        self._update(*reduce_sum(list(sums)))

    def _update(self, n: float, total: float, squares: float) -> None:
        """One step of the running averages from the count, sum and sum of
        squares of this batch's signal."""
        self._last = ((self._mean, self._var, self._steps), (n, total, squares))
        value = total / n
        var = max(squares - total * total / n, 0.0) / (n - 1) if n > 1 else 0.0
        self._steps += 1
        if self._steps == 1:
            self._mean, self._var = value, var
        else:
            self._mean = self.decay * self._mean + (1 - self.decay) * value
            self._var = self.decay * self._var + (1 - self.decay) * var

    def _terms(self, model: Callable, guide: Callable, args: tuple, kwargs: dict) -> Terms:
        w = self._weights(model, guide, args, kwargs, detach_samples=True)
        s = w.scale
        signal = w.log_w.detach()  # (k, units)
        centre = None
        extra = None
        if self.centre_average:
            centre = torch.full((1, w.units), self._mean, dtype=signal.dtype, device=signal.device)
        if self.centre_nn:
            b = self._baseline(self._inputs(w, args, kwargs))
            avg = 0.0 if centre is None else centre
            extra = (signal - avg - b).pow(2).mean(0).sum() * s
            centre = avg + b.detach().unsqueeze(0)
        norm = max(1.0, math.sqrt(self._var)) if self.normalize else 1.0
        surrogate = (w.log_w_reparam.sum(-1) * s + w.rb_score(centre, norm)).mean(0)
        if (self.centre_average or self.normalize) and torch.is_grad_enabled():  # training calls only
            after_nn = signal - (b.detach() if self.centre_nn else 0.0)
            flat = after_nn.double().flatten()
            self._update(float(flat.numel()), flat.sum().item(), flat.pow(2).sum().item())
        return Terms(bound=w.log_w.mean(0).sum() * s, surrogate=surrogate, extra_loss=extra, weights=w)
