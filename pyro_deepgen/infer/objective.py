"""The shared base of pyro_deepgen's objectives.

An objective computes, from per-unit log weights
(:mod:`pyro_deepgen.infer.weights`), the value of its bound and one of two kinds of surrogate:

* a single ``surrogate`` whose gradient is the estimator for every parameter
  (so ``differentiable_loss`` exists), or
* a ``model_surrogate`` and a ``guide_surrogate``, differentiated with respect
  to the model's and the guide's parameters separately (DReG, wake-sleep,
  RWS), told apart by the ``param`` sites of each trace.

Surrogates are quantities to *maximize*; losses are their negatives.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Protocol, runtime_checkable

import pyro
import torch
from pyro.infer import ELBO

from pyro_deepgen.infer.weights import LogWeights, guess_max_plate_nesting, log_weights

__all__ = ["Exchange", "Objective", "Stateful", "Terms", "backward_split", "param_names"]

logger = logging.getLogger(__name__)


def _key(model: Callable, guide: Callable) -> Any:
    """A dict key for a model/guide pair (bound methods compare by object and function)."""
    try:
        hash((model, guide))
        return (model, guide)
    except TypeError:
        return (id(model), id(guide))


#: ``exchange(keys, values)``: every process's ``(keys (n,), values (n, w))`` rows,
#: concatenated over processes (data-parallel training; the identity in one process)
Exchange = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@runtime_checkable
class Stateful(Protocol):
    """An objective (or a training step) with running state that training must keep:
    saved in checkpoints, and made the same on every process of data-parallel training.

    * ``get_state()``/``set_state(state)``: the state, as tensors, numbers and lists;
    * ``sync_state(reduce_sum)``: after each step, make running state (baselines, step
      sizes) what one process would hold after the whole batch; ``reduce_sum`` sums a
      list of numbers over the processes;
    * ``merge_rows(exchange)``: per-datapoint state (e.g. MCEM's chains, keyed by
      row), exchanged so that every process holds every row's (see :data:`Exchange`).

    :class:`Objective` implements all four (doing nothing where there is no state).
    """

    def get_state(self) -> dict[str, Any]: ...

    def set_state(self, state: dict[str, Any]) -> None: ...

    def sync_state(self, reduce_sum: Callable[[list[float]], list[float]]) -> None: ...

    def merge_rows(self, exchange: Exchange) -> None: ...


@dataclass
class Terms:
    """What an objective computed for one batch (sums over the units,
    already multiplied by the data plate's subsampling scale)."""

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


def backward_split(model_surrogate: torch.Tensor, guide_surrogate: torch.Tensor, weights: LogWeights,
                   objective: str, shared: bool = False, retain_graph: bool = False) -> None:
    """Accumulates ``-d model_surrogate / d theta`` into the model's parameters
    and ``-d guide_surrogate / d phi`` into the guide's; with ``shared``, a
    parameter registered in both gets the sum of the two."""
    model_names = set().union(*(param_names(p.model_trace) for p in weights.pieces))
    guide_names = set().union(*(param_names(p.guide_trace) for p in weights.pieces))
    both = sorted(model_names & guide_names)
    if both and not shared:
        raise ValueError(
            f"{objective} gives model and guide parameters different gradients, but these "
            f"parameters are registered in both the model and the guide: {both}. Register the "
            "guide's networks only in the guide (e.g. pyro.module('encoder', self.encoder)).")
    for surrogate, names, retain in ((guide_surrogate, guide_names, True),
                                     (model_surrogate, model_names, retain_graph)):
        params = [_unconstrained(n) for n in sorted(names)]
        params = [p for p in params if p.requires_grad]
        if not params or not surrogate.requires_grad:
            continue
        grads = torch.autograd.grad(-surrogate, params, retain_graph=retain, allow_unused=True)
        for p, g in zip(params, grads):
            if g is not None:
                p.grad = g if p.grad is None else p.grad + g


class Objective(ELBO):
    """Base of pyro_deepgen's objectives; subclasses implement :meth:`_terms`.

    Every objective takes Pyro's ``ELBO`` options, with Pyro's meaning, and
    works with any valid Pyro model/guide pair (see
    :mod:`pyro_deepgen.infer.weights` for how global sites, plates, scales,
    masks and factors enter the weights):

    :param num_particles: particles per step.
    :param max_plate_nesting: the model's nested plates; by default (``inf``, as
        in Pyro) guessed from a first trace of each model/guide pair.
    :param vectorize_particles: ``True``: draw the particles in one vectorized
        plate; ``False``: one trace per particle, as Pyro's default (for models
        whose code cannot be vectorized); ``None`` (default): vectorized, and if
        that run of a model/guide pair fails, one trace per particle from then on
        (logged once).
    :param data_plate: the name of the plate whose entries are the datapoints
        (default: the outermost vectorized plate of every observed site).
    :param retain_graph: keep the autograd graph after the backward pass.
    :param strict_enumeration_warning: accepted for Pyro's interface; like
        ``Trace_ELBO``, these objectives warn (under Pyro's validation) about
        guide sites configured for enumeration, which they sample instead.
    :param ignore_jit_warnings: accepted for Pyro's interface (no effect: these
        objectives are not JIT-traced; see :class:`~pyro_deepgen.infer.Compiled`).
    :param jit_options: likewise.
    """

    min_particles = 1
    #: guide sites must all be reparameterized
    needs_reparam = False
    #: the particles are importance weighted together (so global sites make the
    #: whole batch one unit); ``False`` for objectives that average them
    joint = True
    #: a parameter registered in both model and guide gets the sum of the model's
    #: and the guide's gradients (objectives with split gradients only)
    shared_params = False

    def __init__(self, num_particles: int = 1, max_plate_nesting: int | float = math.inf,
                 vectorize_particles: bool | None = None, data_plate: str | None = None,
                 retain_graph: bool | None = None, strict_enumeration_warning: bool = True,
                 ignore_jit_warnings: bool = False, jit_options: dict | None = None):
        name = type(self).__name__
        if isinstance(num_particles, bool) or not isinstance(num_particles, int) or num_particles < 1:
            raise ValueError(f"{name} needs an integer num_particles >= 1; got {num_particles!r}")
        if num_particles < self.min_particles:
            raise ValueError(f"{name} needs num_particles >= {self.min_particles} (its control "
                             f"variates leave one particle out); got {num_particles}")
        if max_plate_nesting is None:
            max_plate_nesting = math.inf
        if max_plate_nesting != math.inf and (isinstance(max_plate_nesting, bool) or not isinstance(
                max_plate_nesting, int) or max_plate_nesting < 0):
            raise ValueError(f"{name} needs max_plate_nesting an integer >= 0 or inf (guessed); "
                             f"got {max_plate_nesting!r}")
        if vectorize_particles not in (None, True, False):
            raise ValueError(f"vectorize_particles must be True, False or None (vectorized, one "
                             f"particle at a time if that fails); got {vectorize_particles!r}")
        if data_plate is not None and not isinstance(data_plate, str):
            raise ValueError(f"data_plate must be a plate's name; got {data_plate!r}")
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting,
                         vectorize_particles=bool(vectorize_particles),
                         strict_enumeration_warning=strict_enumeration_warning,
                         ignore_jit_warnings=ignore_jit_warnings, jit_options=jit_options,
                         retain_graph=retain_graph)
        self.max_plate_nesting = max_plate_nesting
        self.vectorize_particles = vectorize_particles
        self.data_plate = data_plate
        #: per model/guide pair: the guessed plate nesting, and whether its
        #: particles run one at a time
        self._nesting: dict = {}
        self._sequential: dict = {}
        #: a :class:`~pyro_deepgen.infer.kl.KLSchedule` on the latent sites' KL
        #: terms (set by :func:`~pyro_deepgen.infer.kl.with_kl`), and its step count
        self.kl = None
        self.kl_analytic = False
        self.kl_step = 0

    def _weights(self, model: Callable, guide: Callable, args, kwargs, detach_samples: bool = False,
                 vectorize: bool | None = None) -> LogWeights:
        key = _key(model, guide)
        k = self.num_particles
        if vectorize is None:
            vectorize = self.vectorize_particles is not False and not self._sequential.get(key, False)
        nesting = self.max_plate_nesting
        if vectorize and k > 1 and nesting == math.inf:
            if key not in self._nesting:
                self._nesting[key] = guess_max_plate_nesting(model, guide, args, kwargs)
            nesting = self._nesting[key]
        options = dict(data_plate=self.data_plate, detach_samples=detach_samples, joint=self.joint)
        try:
            w = log_weights(model, guide, args, kwargs, k, nesting, vectorize=vectorize, **options)
        except Exception as e:
            if not (vectorize and k > 1 and self.vectorize_particles is None):
                raise
            w = log_weights(model, guide, args, kwargs, k, self.max_plate_nesting, vectorize=False,
                            **options)
            self._sequential[key] = True
            logger.warning("%s: the vectorized particles of this model/guide pair failed (%s: %s); "
                           "running its %d particles one at a time from now on",
                           type(self).__name__, type(e).__name__, e, k)
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

    def merge_rows(self, exchange: Exchange) -> None:
        """Per-datapoint state, exchanged between processes (see :class:`Stateful`);
        none here."""

    def set_step(self, step: int) -> None:
        """Holds the KL schedule at training step ``step`` (from 0): ``fit`` passes its
        own step count before each step. Used standalone (``SVI``), an objective counts
        its training calls instead: ``loss_and_grads``, and ``differentiable_loss``
        under gradient mode."""
        self.kl_step = step

    def _count_step(self) -> None:
        if torch.is_grad_enabled():
            self.kl_step += 1

    def _get_trace(self, model: Callable, guide: Callable, args, kwargs):
        w = self._weights(model, guide, args, kwargs)
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
        retain = bool(self.retain_graph)
        if t.extra_loss is not None and t.extra_loss.requires_grad:
            t.extra_loss.backward(retain_graph=True)
        if t.surrogate is not None:
            if t.surrogate.requires_grad:
                (-t.surrogate).backward(retain_graph=retain)
        else:
            backward_split(t.model_surrogate, t.guide_surrogate, t.weights, type(self).__name__,
                           shared=self.shared_params, retain_graph=retain)
        return -t.bound.detach()
