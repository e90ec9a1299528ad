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
        """``|mean| / std``; 0 where the gradient is exactly 0 in every draw, ``inf``
        where it is a non-zero constant."""
        out = {}
        for k in self.mean:
            m, s = self.mean[k].abs(), self.std[k]
            out[k] = torch.where(s > 0, m / s.clamp_min(1e-300),
                                 torch.where(m > 0, torch.full_like(m, float("inf")), torch.zeros_like(m)))
        return out

    def summary(self, names: Iterable[str] | None = None) -> dict[str, float]:
        """Over the elements of ``names`` (all by default): the mean and median SNR
        of the elements whose gradient varies between draws, the mean variance of
        all elements, and the counts. Elements whose gradient is 0 in every draw
        (e.g. weights on an input pixel that is 0 in every image) carry neither
        signal nor noise and are left out of the SNR, as are non-zero constants."""
        names = list(self.mean) if names is None else list(names)
        snr = torch.cat([self.snr[n].flatten() for n in names])
        std = torch.cat([self.std[n].flatten() for n in names])
        varies = std > 0
        nan = float("nan")
        return {"snr": snr[varies].mean().item() if varies.any() else nan,
                "snr_median": snr[varies].median().item() if varies.any() else nan,
                "variance": std.pow(2).mean().item(), "num_elements": snr.numel(),
                "num_constant_zero": int((~varies & (snr == 0)).sum()),
                "num_constant_nonzero": int((~varies & (snr != 0)).sum())}

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
    mean: dict[str, torch.Tensor] = {}
    m2: dict[str, torch.Tensor] = {}  # Welford's running sums of squared deviations
    for i in range(1, num_draws + 1):
        for _, p in store.named_parameters():
            p.grad = None
        loss.loss_and_grads(model, guide, *args)
        for name, p in store.named_parameters():
            if names is not None and name not in names:
                continue
            g = (torch.zeros_like(p) if p.grad is None else p.grad.detach()).double()
            if name not in mean:
                mean[name], m2[name] = torch.zeros_like(g), torch.zeros_like(g)
            delta = g - mean[name]
            mean[name] += delta / i
            m2[name] += delta * (g - mean[name])
    for _, p in store.named_parameters():
        p.grad = None
    n = num_draws
    std = {k: (v / (n - 1)).clamp_min(0).sqrt() for k, v in m2.items()}
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
