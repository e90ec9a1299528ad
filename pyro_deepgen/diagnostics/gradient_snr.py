"""Signal-to-noise ratio of stochastic gradients."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import pyro
import torch
from pyro.infer import ELBO

__all__ = ["GradientStats", "gradient_snr", "warm_up_objective"]


@dataclass
class GradientStats:
    """Per-parameter mean, standard deviation and SNR ``|mean| / std`` of the
    gradient over independent draws (each a tensor of the parameter's shape)."""

    mean: dict[str, torch.Tensor]
    std: dict[str, torch.Tensor]
    num_draws: int

    @property
    def snr(self) -> dict[str, torch.Tensor]:
        return {k: self.mean[k].abs() / self.std[k].clamp_min(1e-30) for k in self.mean}

    def summary(self, names: Iterable[str] | None = None) -> dict[str, float]:
        """Mean over elements of the SNR and of the variance, over ``names`` (all by default)."""
        names = list(self.mean) if names is None else list(names)
        snr = torch.cat([self.snr[n].flatten() for n in names])
        var = torch.cat([self.std[n].pow(2).flatten() for n in names])
        return {"snr": snr.mean().item(), "variance": var.mean().item(), "num_elements": snr.numel()}

    def split(self, prefix: str) -> list[str]:
        """The parameter names that start with ``prefix`` (e.g. ``"vae.encoder"``)."""
        return [n for n in self.mean if n.startswith(prefix)]


def gradient_snr(model: Callable, guide: Callable, loss: ELBO, args: tuple, num_draws: int = 100,
                 names: Iterable[str] | None = None) -> GradientStats:
    r"""Draws ``num_draws`` independent gradients of ``loss`` at the current
    parameters (no optimizer step) and returns their statistics.

    Rainforth et al., "Tighter Variational Bounds are Not Necessarily Better",
    2018, arXiv:1802.04537, use the SNR :math:`|\mathbb{E}[g]| / \sigma[g]` to show
    that the IWAE guide gradient degrades as k grows while DReG's does not.

    :param args: the model's arguments for one batch, e.g. ``(x,)``.
    """
    if num_draws < 2:
        raise ValueError(f"gradient_snr needs num_draws >= 2; got {num_draws}")
    store = pyro.get_param_store()
    sums: dict[str, torch.Tensor] = {}
    squares: dict[str, torch.Tensor] = {}
    for _ in range(num_draws):
        for _, p in store.named_parameters():
            p.grad = None
        loss.loss_and_grads(model, guide, *args)
        for name, p in store.named_parameters():
            if names is not None and name not in names:
                continue
            g = torch.zeros_like(p) if p.grad is None else p.grad.detach()
            sums[name] = sums.get(name, 0) + g.double()
            squares[name] = squares.get(name, 0) + g.double() ** 2
    for _, p in store.named_parameters():
        p.grad = None
    n = num_draws
    mean = {k: v / n for k, v in sums.items()}
    std = {k: ((squares[k] / n - mean[k] ** 2).clamp_min(0) * n / (n - 1)).sqrt() for k in sums}
    return GradientStats(mean=mean, std=std, num_draws=n)


def warm_up_objective(model: Callable, guide: Callable, loss: ELBO, args: tuple, steps: int = 100,
                      lr: float = 1e-2) -> list[str]:
    """Trains only the objective's *own* parameters (e.g. NVIL's baseline
    network) and running averages for ``steps`` steps at fixed model and guide
    parameters, so that estimators with learned baselines can be compared at
    one checkpoint on equal terms. Returns the names of the parameters trained."""
    from pyro import poutine

    store = pyro.get_param_store()
    with poutine.block(), torch.no_grad():
        traces = [poutine.trace(fn).get_trace(*args) for fn in (guide, model)]
    model_guide = {n for t in traces for n, s in t.nodes.items() if s["type"] == "param"}
    optimizer = None
    own: list[str] = []
    for _ in range(steps):
        for _, p in store.named_parameters():
            p.grad = None
        loss.loss_and_grads(model, guide, *args)
        if optimizer is None:
            own = sorted(set(store.keys()) - model_guide)
            if not own:
                break  # nothing but running averages, which the calls above updated
            optimizer = torch.optim.Adam([store.get_param(n).unconstrained() for n in own], lr=lr)
        optimizer.step()
    for _, p in store.named_parameters():
        p.grad = None
    return own
