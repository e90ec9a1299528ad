"""The shared base of pyro_deepgen's objectives.

An objective computes, from per-datapoint log weights, the value of its
bound and one of two kinds of surrogate:

* a single ``surrogate`` whose gradient is the estimator for every parameter
  (so ``differentiable_loss`` exists), or
* a ``model_surrogate`` and a ``guide_surrogate``, differentiated with respect
  to the model's and the guide's parameters separately (DReG, wake-sleep,
  RWS), told apart by the ``param`` sites of each trace.

Surrogates are quantities to *maximize*; losses are their negatives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import pyro
import torch
from pyro.infer import ELBO

from pyro_deepgen.infer.weights import LogWeights, log_weights

__all__ = ["Objective", "Terms", "backward_split", "param_names"]


@dataclass
class Terms:
    """What an objective computed for one batch (sums over the data plate,
    already multiplied by its subsampling scale)."""

    bound: torch.Tensor
    surrogate: torch.Tensor | None = None
    model_surrogate: torch.Tensor | None = None
    guide_surrogate: torch.Tensor | None = None
    extra_loss: torch.Tensor | None = None  # e.g. a baseline network's regression loss
    weights: LogWeights | None = None


def param_names(trace) -> set[str]:
    return {name for name, site in trace.nodes.items() if site["type"] == "param"}


def _unconstrained(name: str) -> torch.Tensor:
    return pyro.get_param_store().get_param(name).unconstrained()


def backward_split(model_surrogate: torch.Tensor, guide_surrogate: torch.Tensor,
                   model_trace, guide_trace, objective: str) -> None:
    """Accumulates ``-d model_surrogate / d theta`` into the model's parameters
    and ``-d guide_surrogate / d phi`` into the guide's."""
    model_names, guide_names = param_names(model_trace), param_names(guide_trace)
    shared = sorted(model_names & guide_names)
    if shared:
        raise ValueError(
            f"{objective} gives model and guide parameters different gradients, but these "
            f"parameters are registered in both the model and the guide: {shared}. Register the "
            "guide's networks only in the guide (e.g. pyro.module('encoder', self.encoder)).")
    for surrogate, names, retain in ((guide_surrogate, guide_names, True),
                                     (model_surrogate, model_names, False)):
        params = [_unconstrained(n) for n in sorted(names)]
        params = [p for p in params if p.requires_grad]
        if not params or not surrogate.requires_grad:
            continue
        grads = torch.autograd.grad(-surrogate, params, retain_graph=retain, allow_unused=True)
        for p, g in zip(params, grads):
            if g is not None:
                p.grad = g if p.grad is None else p.grad + g


class Objective(ELBO):
    """Base of the per-datapoint objectives; subclasses implement :meth:`_terms`.

    :param num_particles: particles per datapoint, vectorized in one outer plate.
    :param max_plate_nesting: plates nested in the model (1 by the convention).
    """

    min_particles = 1
    #: guide sites must all be reparameterized
    needs_reparam = False

    def __init__(self, num_particles: int = 1, max_plate_nesting: int = 1):
        name = type(self).__name__
        if isinstance(num_particles, bool) or not isinstance(num_particles, int) or num_particles < 1:
            raise ValueError(f"{name} needs an integer num_particles >= 1; got {num_particles!r}")
        if num_particles < self.min_particles:
            raise ValueError(f"{name} needs num_particles >= {self.min_particles} (its control "
                             f"variates leave one particle out); got {num_particles}")
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting,
                         vectorize_particles=True)
        self.max_plate_nesting = max_plate_nesting
        #: a :class:`~pyro_deepgen.infer.kl.KLSchedule` on the latent sites' KL
        #: terms (set by :func:`~pyro_deepgen.infer.kl.with_kl`), and its step count
        self.kl = None
        self.kl_analytic = False
        self.kl_step = 0

    def _weights(self, model: Callable, guide: Callable, args, kwargs, **options: Any) -> LogWeights:
        w = log_weights(model, guide, args, kwargs, self.num_particles, self.max_plate_nesting,
                        **options)
        if self.kl is not None:
            w = self.kl.apply(w, self.kl_step, analytic=self.kl_analytic)
        if self.needs_reparam:
            bad = w.non_reparameterized_sites()
            if bad:
                raise ValueError(
                    f"{type(self).__name__} needs reparameterized guide sites, but {bad} "
                    "cannot be reparameterized (no rsample); for discrete latents use IWAE, "
                    "VIMCO, Reinforce, NVIL or RWS")
        return w

    def init_params(self, model: Callable, guide: Callable, *args, **kwargs) -> None:
        """Creates the objective's own parameters (e.g. a baseline network) in
        Pyro's param store, so that a checkpoint can be loaded into them."""

    def get_state(self) -> dict[str, Any]:
        """The objective's running state (e.g. baseline averages, the KL
        schedule's step) for checkpoints."""
        return {"kl_step": self.kl_step}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restores what :meth:`get_state` returned."""
        self.kl_step = state.get("kl_step", 0)

    def sync_state(self, reduce_sum: Callable[[list[float]], list[float]]) -> None:
        """Data-parallel training (:mod:`pyro_deepgen.distributed`) calls this on
        every process after each step, so that running state (baselines, step
        sizes) becomes what one process would hold after the whole batch.
        ``reduce_sum`` sums a list of numbers over the processes."""

    def _count_step(self) -> None:
        if torch.is_grad_enabled():
            self.kl_step += 1

    def _get_trace(self, model: Callable, guide: Callable, args, kwargs):
        w = log_weights(model, guide, args, kwargs, self.num_particles, self.max_plate_nesting)
        return w.model_trace, w.guide_trace

    def _terms(self, model: Callable, guide: Callable, args: tuple, kwargs: dict) -> Terms:
        raise NotImplementedError

    def loss(self, model: Callable, guide: Callable, *args, **kwargs) -> float:
        """The negative bound, summed over the data plate (no gradients, no state updates)."""
        with torch.no_grad():
            return -self._terms(model, guide, args, kwargs).bound.item()

    def differentiable_loss(self, model: Callable, guide: Callable, *args, **kwargs) -> torch.Tensor:
        """A scalar whose value is the negative bound and whose gradient is the
        estimator's (a single surrogate), for use as a ``torch.nn.Module`` loss."""
        t = self._terms(model, guide, args, kwargs)
        if t.surrogate is None:
            raise NotImplementedError(
                f"{type(self).__name__} has no single differentiable loss: its model and guide "
                "parameters follow different gradients. Use loss_and_grads (as SVI does).")
        loss = -t.surrogate
        if t.extra_loss is not None:
            loss = loss + t.extra_loss
        self._count_step()
        return loss - loss.detach() - t.bound.detach()

    def loss_and_grads(self, model: Callable, guide: Callable, *args, **kwargs) -> float:
        loss = self._backward(self._terms(model, guide, args, kwargs))
        self._count_step()
        return loss.item()

    def _backward(self, t: Terms) -> torch.Tensor:
        """Accumulates the estimator's gradients from ``t`` into the parameters'
        ``.grad``; returns the loss (the negative bound) as a tensor."""
        if t.extra_loss is not None and t.extra_loss.requires_grad:
            t.extra_loss.backward(retain_graph=True)
        if t.surrogate is not None:
            if t.surrogate.requires_grad:
                (-t.surrogate).backward()
        else:
            backward_split(t.model_surrogate, t.guide_surrogate, t.weights.model_trace,
                           t.weights.guide_trace, type(self).__name__)
        return -t.bound.detach()
