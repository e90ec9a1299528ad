"""Per-datapoint log importance weights from vectorized Pyro traces.

Every objective and evaluator in pyro_deepgen reduces a model/guide pair to
tensors of shape ``(num_particles, batch)``: the log joint ``log p(x, z)``,
the guide's ``log q(z|x)``, and the part of ``log q`` that comes from
non-reparameterized (score-function) sites. Pyro's own
``vectorized_importance_weights`` sums over the data plate; this keeps it.
"""

from __future__ import annotations

import contextlib

from dataclasses import dataclass, field
from typing import Any, Callable

import pyro
import torch
from pyro import poutine
from pyro.infer.util import is_validation_enabled
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import prune_subsample_sites
from pyro.util import check_model_guide_match
from torch.distributions import Independent, TransformedDistribution

from pyro_deepgen.infer.path import path_log_prob

__all__ = ["LogWeights", "log_weights", "DetachSamples", "PARTICLE_PLATE"]

PARTICLE_PLATE = "particles"


class DetachSamples(Messenger):
    """Detaches the value of every latent sample site as it is drawn, so that
    no gradient flows through samples (score-function estimators).

    Enter it *outside* ``poutine.trace``: post-processing runs from the
    outermost handler in, so the trace then records the detached value."""

    def _postprocess_message(self, msg: dict) -> None:
        if msg["type"] == "sample" and not msg["is_observed"] and torch.is_tensor(msg["value"]):
            msg["value"] = msg["value"].detach()


@dataclass
class _Reducer:
    k: int
    batch: int
    max_plate_nesting: int
    data_dim: int
    plate_scale: float
    use_scale: bool
    data_plate: str

    def __call__(self, site: dict, value: torch.Tensor | None = None,
                 log_prob: Callable | None = None) -> torch.Tensor:
        """``site``'s log density (at ``value``, default its own) as ``(k, batch)``;
        ``log_prob(fn, value)`` replaces ``fn.log_prob(value)``."""
        value = site["value"] if value is None else value
        lp = site["fn"].log_prob(value) if log_prob is None else log_prob(site["fn"], value)
        return self._reduce(site, lp, 0)

    def units(self, site: dict, log_prob: Callable | None = None) -> torch.Tensor:
        """``site``'s log density per unit as ``(k, batch, units)``: the elements
        of the event of an ``Independent`` distribution (e.g. ``Normal(...).to_event(1)``),
        else the whole site as one unit."""
        log_prob = log_prob or (lambda f, v: f.log_prob(v))
        fn, r = factorized(site["fn"])
        return self._reduce(site, flatten_units(log_prob(fn, site["value"]), r), 1)

    def _reduce(self, site: dict, lp: torch.Tensor, units: int) -> torch.Tensor:
        _data_frame(site, self.data_plate)
        tail = lp.shape[lp.dim() - units:]

        def batched(t):  # mask or scale over the batch dims: broadcast over units
            return t.reshape(t.shape + (1,) * units) if torch.is_tensor(t) else t

        if site["mask"] is not None:
            lp = lp * batched(site["mask"])
        if self.use_scale and not (isinstance(site["scale"], float) and site["scale"] == self.plate_scale):
            lp = lp * (batched(site["scale"]) / self.plate_scale)
        n = self.max_plate_nesting + 1
        if lp.dim() - units > n:
            raise ValueError(
                f"site {site['name']!r} has batch shape {tuple(lp.shape[:lp.dim() - units])} with more "
                f"than max_plate_nesting={self.max_plate_nesting} plate dims; move event dims with "
                ".to_event()"
            )
        lp = lp.reshape((1,) * (n + units - lp.dim()) + lp.shape)
        keep = {0, n + self.data_dim}
        other = [d for d in range(n) if d not in keep]
        if other:
            lp = lp.sum(other, keepdim=True)
        lp = lp.reshape((lp.shape[0], lp.shape[n + self.data_dim]) + tail)
        return lp.expand((self.k, self.batch) + tail)


def factorized(fn) -> tuple[Any, int]:
    """``fn``'s per-unit distribution and the number of event dims it reinterpreted:
    ``Normal(...).to_event(1)`` gives ``(Normal(...), 1)``; a distribution with a
    ``to_independent()`` view is unwrapped likewise; a flow is one unit, ``(fn, 0)``."""
    fn = fn.to_independent() if hasattr(fn, "to_independent") else fn
    r = 0
    while isinstance(fn, Independent) and not isinstance(fn.base_dist, TransformedDistribution):
        r += fn.reinterpreted_batch_ndims
        fn = fn.base_dist
    return fn, r


def flatten_units(t: torch.Tensor, r: int) -> torch.Tensor:
    """``t`` with its last ``r`` dims flattened into one units dim (``r=0``: a new one)."""
    return t.reshape(t.shape[:t.dim() - r] + (-1,)) if r else t.unsqueeze(-1)


@dataclass
class LogWeights:
    """Per-particle, per-datapoint log densities, each of shape ``(k, batch)``.

    ``log_q_score`` is the part of ``log_q`` from guide sites without
    ``rsample``; ``scale`` is the data plate's subsampling scale
    (``full_size / size``).
    """

    log_p: torch.Tensor
    log_q: torch.Tensor
    log_q_score: torch.Tensor
    scale: float
    model_trace: Any
    guide_trace: Any
    _reduce: _Reducer | None = field(default=None, repr=False)
    #: set by a KL schedule (:mod:`pyro_deepgen.infer.kl`): a zero-valued
    #: correction to :meth:`log_w_path`, and the factor on every unit's KL
    #: (``None`` when the units' factors differ)
    path_adjust: Callable[[], torch.Tensor] | None = field(default=None, repr=False)
    kl_factor: float | None = 1.0

    @property
    def log_w(self) -> torch.Tensor:
        return self.log_p - self.log_q

    def guide_sites(self) -> list[dict]:
        return [s for s in self.guide_trace.nodes.values()
                if s["type"] == "sample" and not s["is_observed"]]

    def log_q_path(self) -> torch.Tensor:
        """``log q`` whose gradient is the path derivative only, through the
        samples (STL, DReG); flows without an inverse included."""
        total = torch.zeros(())
        for site in self.guide_sites():
            total = total + self._reduce(site, log_prob=path_log_prob)
        return total.expand(self._reduce.k, self._reduce.batch)

    def log_w_path(self) -> torch.Tensor:
        """``log_w`` with the guide's score term removed: the same value, and
        with respect to the guide's parameters only the path derivative."""
        log_w = self.log_p - self.log_q_path()
        return log_w if self.path_adjust is None else log_w + self.path_adjust()

    def non_reparameterized_sites(self) -> list[str]:
        return [s["name"] for s in self.guide_sites() if not getattr(s["fn"], "has_rsample", False)]


def _data_frame(site: dict, data_plate: str):
    for frame in site["cond_indep_stack"]:
        if frame.name == data_plate:
            return frame
    raise ValueError(
        f"sample site {site['name']!r} is outside the {data_plate!r} plate; per-datapoint "
        f"objectives need every sample site under pyro.plate({data_plate!r}, ..., dim=-1)"
    )


def log_weights(
    model: Callable,
    guide: Callable,
    args: tuple = (),
    kwargs: dict | None = None,
    num_particles: int = 1,
    max_plate_nesting: int = 1,
    data_plate: str = "data",
    use_scale: bool = True,
    detach_samples: bool = False,
) -> LogWeights:
    """Runs ``guide`` and ``model`` once, vectorized over ``num_particles`` in an
    outer plate, and returns per-datapoint log densities.

    :param use_scale: apply each site's scale relative to the data plate's
        subsampling scale (e.g. KL annealing by ``poutine.scale``); evaluation
        passes ``False`` to get the exact densities.
    :param detach_samples: draw the guide's samples without gradient (for
        score-function estimators).
    """
    kwargs = kwargs or {}
    if num_particles < 1:
        raise ValueError(f"num_particles must be >= 1; got {num_particles}")
    plate = pyro.plate(PARTICLE_PLATE, num_particles, dim=-max_plate_nesting - 1)
    with DetachSamples() if detach_samples else contextlib.nullcontext():
        guide_trace = poutine.trace(plate(guide)).get_trace(*args, **kwargs)
    model_trace = poutine.trace(poutine.replay(plate(model), trace=guide_trace)).get_trace(
        *args, **kwargs
    )
    if is_validation_enabled():
        check_model_guide_match(model_trace, guide_trace, max_plate_nesting + 1)
    guide_trace = prune_subsample_sites(guide_trace)
    model_trace = prune_subsample_sites(model_trace)

    frame = None
    for site in model_trace.nodes.values():
        if site["type"] == "sample":
            frame = _data_frame(site, data_plate)
            break
    if frame is None:
        raise ValueError("the model has no sample sites")
    plate_scale = (frame.full_size or frame.size) / frame.size
    reduce = _Reducer(num_particles, frame.size, max_plate_nesting, frame.dim, plate_scale,
                      use_scale, data_plate)
    log_p = torch.zeros(())
    log_q = torch.zeros(())
    log_q_score = torch.zeros(())
    for site in model_trace.nodes.values():
        if site["type"] == "sample":
            log_p = log_p + reduce(site)
    for site in guide_trace.nodes.values():
        if site["type"] == "sample" and not site["is_observed"]:
            lq = reduce(site)
            log_q = log_q + lq
            if not getattr(site["fn"], "has_rsample", False):
                log_q_score = log_q_score + lq
    device = log_p.device
    shape = (num_particles, frame.size)
    return LogWeights(
        log_p=log_p.expand(shape),
        log_q=log_q.to(device).expand(shape),
        log_q_score=log_q_score.to(device).expand(shape),
        scale=plate_scale,
        model_trace=model_trace,
        guide_trace=guide_trace,
        _reduce=reduce,
    )
