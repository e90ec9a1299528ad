r"""Log importance weights from Pyro traces, per datapoint where the model allows it.

Every objective and evaluator in pyro_deepgen reduces a model/guide pair to
tensors of shape ``(num_particles, units)``: the model's ``log p``, the guide's
``log q`` and the score terms of its non-reparameterized sites. Any valid Pyro
model works: global latents, plates of any name and depth, subsampling,
``poutine.scale``, masks and ``pyro.factor`` in the model and in the guide.

**Units.** The *data plate* is the plate named by ``data_plate``, or else the
outermost vectorized plate that every observed site of the model sits in. With
a data plate of size ``B`` and subsampling scale ``s = full_size / B``, a
unit is a datapoint, and for every site inside the plate the log density is
summed over the site's other plates and divided by ``s`` (so ``s`` multiplies
each datapoint's bound once, outside any log-mean-exp). Sites outside the data
plate (global latents, global observations, factors) are *global*:

* where the particles are importance weighted (``joint=True``, ``k > 1``), one
  global site makes the batch a single unit: :math:`\log w_i` is the whole
  batch's log weight, every scale applied inside it, as in Pyro's
  ``RenyiELBO(alpha=0)``;
* otherwise (one particle, or an objective that averages its particles) a global
  site's log density is spread evenly over the units, so that
  :math:`s \sum_u \log w_{iu}` is still particle ``i``'s joint log weight.

A model without a data plate has a single unit. Scales other than the data
plate's (``poutine.scale``, nested subsampled plates, scales on global sites)
multiply log densities inside the weights; masks remove terms.

**Score terms** follow Pyro's ``Trace_ELBO``: a guide site whose distribution
has no ``rsample`` (or every latent site, with ``detach_samples``) contributes
its *unscaled, unmasked* log density as the score, multiplied by a learning
signal that already carries the scales, so that every scale counts once.
:meth:`LogWeights.rb_score` gives each such site the signal of Pyro's
``Trace_ELBO`` (every term that no plate separates from the site), and
:attr:`LogWeights.score` the per-unit score that importance-weighted
objectives multiply by their per-unit signal.

Particles are vectorized in an outer plate (named :data:`PARTICLE_PLATE`, at a
dim left of the model's ``max_plate_nesting`` plates, guessed from a first
trace when not given), or drawn one at a time (``vectorize=False``) for models
whose code cannot be vectorized. With one particle no plate is added, exactly
as in Pyro.
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import pyro
import pyro.util
import torch
from pyro import poutine
from pyro.distributions import Unit
from pyro.distributions.util import scale_and_mask
from pyro.infer.util import is_validation_enabled
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import prune_subsample_sites, site_is_subsample
from pyro.util import check_if_enumerated, check_model_guide_match, check_site_shape
from torch.distributions import Independent, TransformedDistribution

from pyro_deepgen.infer.path import path_log_prob

__all__ = ["DetachSamples", "Layout", "LogWeights", "PARTICLE_PLATE", "data_sites", "find_data_plate",
           "guess_max_plate_nesting", "log_weights", "unit_inputs"]

#: the name of the objectives' particle plate (chosen not to collide with a user's plate)
PARTICLE_PLATE = "_pyro_deepgen_particles"


class DetachSamples(Messenger):
    """Detaches the value of every latent sample site as it is drawn, so that
    no gradient flows through samples (score-function estimators).

    Enter it *outside* ``poutine.trace``: post-processing runs from the
    outermost handler in, so the trace then records the detached value."""

    def _postprocess_message(self, msg: dict) -> None:
        if msg["type"] == "sample" and not msg["is_observed"] and torch.is_tensor(msg["value"]):
            msg["value"] = msg["value"].detach()


def _sample_sites(trace) -> list[dict]:
    """The sample sites, a plate's subsample sites aside."""
    return [s for s in trace.nodes.values() if s["type"] == "sample" and not site_is_subsample(s)]


def _frames(site: dict) -> tuple:
    """The site's vectorized plates, outermost first, without the particle plate."""
    return tuple(f for f in site["cond_indep_stack"] if f.vectorized and f.name != PARTICLE_PLATE)


def _is_factor(site: dict) -> bool:
    return isinstance(site["fn"], Unit)


def _is_data(site: dict) -> bool:
    """An observed site that holds data: not a factor, not ``pyro.deterministic``,
    not masked out entirely."""
    return (site["is_observed"] and not _is_factor(site) and torch.is_tensor(site["value"])
            and site["mask"] is not False and not site["infer"].get("_deterministic", False))


def data_sites(trace) -> list[dict]:
    """The observed sites of ``trace`` that hold data (not factors, deterministic
    sites, or sites masked out entirely)."""
    return [s for s in _sample_sites(trace) if _is_data(s)]


def guess_max_plate_nesting(model: Callable, guide: Callable, args: tuple = (),
                            kwargs: dict | None = None) -> int:
    """The number of nested vectorized plates of the model and guide, read from
    one trace of each (blocked from outer handlers), as Pyro's ``ELBO`` guesses
    ``max_plate_nesting`` when it is not given (and, under Pyro's validation,
    checks the sites' shapes, as Pyro does then). Assumes a static structure.
    The random number generators are left as they were, so that a seed gives
    the same draws with and without this guess."""
    kwargs = kwargs or {}
    state = pyro.util.get_rng_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    try:
        with torch.random.fork_rng(devices=devices), poutine.block():
            guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
            model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
                *args, **kwargs)
    finally:
        pyro.util.set_rng_state(state)
    if is_validation_enabled():  # shapes are checked here, before a particle plate can hide them
        for site in _sample_sites(model_trace) + _sample_sites(guide_trace):
            site["log_prob"] = site["fn"].log_prob(site["value"])
            check_site_shape(site, math.inf)
    dims = [f.dim for trace in (model_trace, guide_trace) for s in _sample_sites(trace)
            for f in _frames(s)]
    return -min(dims) if dims else 0


def find_data_plate(model_trace, name: str | None = None):
    """The data plate's frame in ``model_trace``: the plate called ``name``, or
    else the outermost vectorized plate that every observed site (factors aside,
    unless there are only factors) sits in; ``None`` if there is none."""
    sites = _sample_sites(model_trace)
    if name is not None:
        found = [f for s in sites for f in s["cond_indep_stack"] if f.name == name]
        if not found:
            plates = sorted({f.name for s in sites for f in _frames(s)})
            raise ValueError(f"data_plate={name!r}: the model has no plate called {name!r}; its "
                             f"vectorized plates: {plates}")
        if not found[0].vectorized:
            raise ValueError(
                f"data_plate={name!r} is a sequential plate (for i in pyro.plate(...)); per-datapoint "
                f"weights need a vectorized one (with pyro.plate({name!r}, size): ...)")
        return found[0]
    observed = [s for s in sites if _is_data(s)] or [s for s in sites if s["is_observed"]]
    if not observed:
        return None
    common = set(_frames(observed[0]))
    for s in observed[1:]:
        common &= set(_frames(s))
    outermost = [f for f in _frames(observed[0]) if f in common]
    return outermost[0] if outermost else None


def _in_frame(site_frames, frame) -> bool:
    return frame is not None and any(f.name == frame.name and f.dim == frame.dim for f in site_frames)


@dataclass(frozen=True)
class Layout:
    """How one trace pair's log densities become ``(k, units)`` tensors.

    :param k: particles in the traces (1 when they carry no particle plate).
    :param nesting: the model's plate dims (``max_plate_nesting``).
    :param frame: the data plate, or ``None`` for a single unit.
    :param scale: the data plate's subsampling scale ``s`` (1 for a single unit,
        or when densities are taken unscaled).
    :param use_scale: apply the sites' scales.
    """

    k: int
    nesting: int
    frame: Any
    units: int
    scale: float
    use_scale: bool = True

    def normalize(self, name: str, t: torch.Tensor, event_units: int = 0) -> torch.Tensor:
        """``t``, a site's log density over its batch dims (and ``event_units``
        trailing unit dims), as ``(k, *plates, *unit dims)``."""
        n = self.nesting + 1
        batch = t.dim() - event_units
        if batch > n:
            raise ValueError(
                f"site {name!r} has batch shape {tuple(t.shape[:batch])}, with more dims than the "
                f"{self.nesting} plate(s) (max_plate_nesting) and the particle dim; move its event "
                "dims with .to_event(), or pass a larger max_plate_nesting")
        t = t.reshape((1,) * (n - batch) + t.shape)
        return t.expand((self.k,) + t.shape[1:]) if t.shape[0] == 1 else t

    def tensor(self, site: dict, lp: torch.Tensor, event_units: int = 0) -> torch.Tensor:
        """``lp`` (the site's log density, with ``event_units`` trailing unit dims)
        scaled, masked and reduced to ``(k, units, *unit dims)``."""
        if site["mask"] is not None or (self.use_scale and not _is_one(site["scale"])):
            pad = (1,) * event_units
            mask = site["mask"]
            mask = mask.reshape(mask.shape + pad) if torch.is_tensor(mask) else mask
            scale = site["scale"] if self.use_scale else 1.0
            scale = scale.reshape(scale.shape + pad) if torch.is_tensor(scale) else scale
            lp = scale_and_mask(lp, scale, mask)
        return self.reduce(self.normalize(site["name"], lp, event_units), _frames(site), event_units)

    def reduce(self, t: torch.Tensor, frames: tuple, event_units: int = 0) -> torch.Tensor:
        """A normalized ``(k, *plates, *unit dims)`` log density of a site in
        ``frames``, as ``(k, units, *unit dims)``."""
        n = self.nesting + 1
        tail = t.shape[n:]
        if _in_frame(frames, self.frame):
            d = n + self.frame.dim
            other = [i for i in range(1, n) if i != d]
            if other:
                t = t.sum(other, keepdim=True)
            t = t.reshape((t.shape[0], t.shape[d]) + tail)
            if self.scale != 1.0:
                t = t / self.scale
            return t.expand((self.k, self.units) + tail)
        if n > 1:
            t = t.sum(list(range(1, n)))
        if self.frame is not None:  # global site, spread over the units
            t = t / (self.scale * self.units)
        return t.reshape((t.shape[0], 1) + tail).expand((self.k, self.units) + tail)

    def site(self, site: dict, value: torch.Tensor | None = None,
             log_prob: Callable | None = None) -> torch.Tensor:
        """``site``'s log density (at ``value``, default its own) as ``(k, units)``;
        ``log_prob(fn, value)`` replaces ``fn.log_prob(value)``."""
        value = site["value"] if value is None else value
        lp = site["fn"].log_prob(value) if log_prob is None else log_prob(site["fn"], value)
        return self.tensor(site, lp)

    def site_units(self, site: dict, log_prob: Callable | None = None) -> torch.Tensor:
        """``site``'s log density per latent unit as ``(k, units, latent units)``:
        the elements of the event of an ``Independent`` distribution (e.g.
        ``Normal(...).to_event(1)``), else the whole site as one unit."""
        log_prob = log_prob or (lambda f, v: f.log_prob(v))
        fn, r = factorized(site["fn"])
        return self.tensor(site, flatten_units(log_prob(fn, site["value"]), r), 1)


def _is_one(scale) -> bool:
    return isinstance(scale, (int, float)) and scale == 1.0


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
class _Piece:
    """One model/guide trace pair (all particles, or one of them) and its terms."""

    full_model_trace: Any  # with the subsample sites
    guide_trace: Any
    layout: Layout
    detached: bool
    #: (frames, site, unscaled log density, sign) of every site: +1 model, -1 guide
    terms: list = field(default_factory=list)
    #: (frames, normalized unscaled log q) of the score-function guide sites
    scores: list = field(default_factory=list)
    log_p: Any = None
    log_q: Any = None
    log_q_nonreparam: Any = None
    score: Any = None

    def __post_init__(self) -> None:
        self.model_trace = prune_subsample_sites(self.full_model_trace)

    def build(self, check_nesting: int | None = None) -> None:
        """Computes every site's log density once (checking its shape against
        ``check_nesting`` plates under Pyro's validation) and the unit tensors."""
        layout = self.layout
        log_p = log_q = lq_nr = score = torch.zeros(())
        device = None
        for sign, trace in ((1.0, self.model_trace), (-1.0, self.guide_trace)):
            for site in _sample_sites(trace):
                try:
                    raw = site["fn"].log_prob(site["value"])
                except (ValueError, RuntimeError) as e:
                    raise type(e)(f"Error while computing log_prob at site {site['name']!r}: {e}") from e
                if check_nesting is not None:
                    site["log_prob"] = raw
                    check_site_shape(site, check_nesting)
                frames = _frames(site)
                device = raw.device
                self.terms.append((frames, site, raw, sign))
                lp = layout.tensor(site, raw)
                if sign > 0:
                    log_p = log_p + lp
                    continue
                log_q = log_q + lp
                if self.is_score(site):
                    lq_nr = lq_nr + lp
                    s = layout.normalize(site["name"], raw)
                    self.scores.append((frames, s))
                    score = score + layout.reduce(s, frames) * layout.scale  # unscaled (spread if global)
        shape = (layout.k, layout.units)
        log_p, log_q, lq_nr, score = (t if t.dim() else t.to(device).expand(shape)
                                      for t in (log_p, log_q, lq_nr, score))
        self.log_p, self.log_q, self.log_q_nonreparam, self.score = log_p, log_q, lq_nr, score

    def is_score(self, site: dict) -> bool:
        """A guide site whose gradient is the score function (Pyro's ``Trace_ELBO``)."""
        if not site["is_observed"] and self.detached:
            return True
        return not getattr(site["fn"], "has_rsample", False)

    def signals(self) -> list[tuple[tuple, torch.Tensor]]:
        """The detached terms, summed by plates: (frames, normalized tensor)."""
        groups: dict[tuple, torch.Tensor] = {}
        layout = self.layout
        for frames, site, raw, sign in self.terms:
            lp = raw.detach()
            if site["mask"] is not None or (layout.use_scale and not _is_one(site["scale"])):
                scale = site["scale"] if layout.use_scale else 1.0
                lp = scale_and_mask(lp, scale, site["mask"])
            key = tuple(sorted(frames, key=lambda f: f.dim))
            t = sign * layout.normalize(site["name"], lp)
            groups[key] = groups[key] + t if key in groups else t
        return list(groups.items())

    def rb_score(self, centre: torch.Tensor | None, norm: float,
                 shift: torch.Tensor | None = None) -> torch.Tensor:
        """Sum over score sites of ``sg((signal + shift - centre) / norm) * score``,
        value 0, per particle (``shift``: a per-unit change of ``log_w``)."""
        layout = self.layout
        n = layout.nesting + 1
        total = torch.zeros(())
        if not self.scores:
            return total.expand(layout.k)
        groups = self.signals()
        for frames, score in self.scores:
            names = {(f.name, f.dim) for f in frames}
            signal = torch.zeros(())
            for group_frames, t in groups:
                for f in group_frames:
                    if (f.name, f.dim) not in names and t.shape[n + f.dim] != 1:
                        t = t.sum(n + f.dim, keepdim=True)
                signal = signal + t
            if shift is not None:
                signal = signal + self.place(shift, frames, spread=True)
            if centre is not None:
                signal = signal - self.place(centre, frames)
            if norm != 1.0:
                signal = signal / norm
            term = signal.detach() * (score - score.detach())
            total = total + term.reshape(term.shape[0], -1).sum(-1)
        return total

    def place(self, per_unit: torch.Tensor, frames: tuple, spread: bool = False) -> torch.Tensor:
        """A per-unit tensor ``(k or 1, units)`` in ``log_w``'s scale, as a normalized
        tensor in the absolute scale of a site in ``frames``: each datapoint's value for
        a site in the data plate; for a site outside it, zero, or (``spread``) the sum."""
        layout = self.layout
        n = layout.nesting + 1
        if layout.frame is None:
            return per_unit[:, 0].reshape((-1,) + (1,) * (n - 1))
        if not _in_frame(frames, layout.frame):
            if not spread:
                return torch.zeros(())
            return (per_unit.sum(-1) * layout.scale).reshape((-1,) + (1,) * (n - 1))
        shape = [per_unit.shape[0]] + [1] * (n - 1)
        shape[n + layout.frame.dim] = layout.units
        return (per_unit * layout.scale).reshape(shape)


class LogWeights:
    r"""Per-particle, per-unit log densities, each of shape ``(k, units)``
    (see the module docstring for units, scales and score terms).

    * ``log_p``: the model's sites (latent, observed, factors);
    * ``log_q``: the guide's sites (latent, observed, factors);
    * ``log_q_nonreparam``: the part of ``log_q`` from score-function sites;
    * ``score``: those sites' unscaled, unmasked log densities;
    * ``scale``: the data plate's subsampling scale ``s``, by which a sum over
      units is multiplied to estimate the whole data set's.
    """

    def __init__(self, pieces: list[_Piece], data_frame: Any = None):
        self.pieces = pieces
        #: the data plate (also when global sites made the batch a single unit)
        self.data_frame = data_frame
        cat = (lambda name: getattr(pieces[0], name)) if len(pieces) == 1 else \
            (lambda name: torch.cat([getattr(p, name) for p in pieces]))
        self.log_p = cat("log_p")
        self.log_q = cat("log_q")
        self.log_q_nonreparam = cat("log_q_nonreparam")
        self.score = cat("score")
        #: set by a KL schedule (:mod:`pyro_deepgen.infer.kl`): a zero-valued
        #: correction to :meth:`log_w_path`, and the factor on every unit's KL
        #: (``None`` when the units' factors differ)
        self.path_adjust: Callable[[], torch.Tensor] | None = None
        self.kl_factor: float | None = 1.0
        #: set by a KL schedule: the change it made to ``log_w`` per unit, which
        #: :meth:`rb_score` adds to the learning signals
        self.signal_shift: torch.Tensor | None = None

    def replace(self, **changes: Any) -> "LogWeights":
        """A copy with the given attributes replaced."""
        new = copy.copy(self)
        for name, value in changes.items():
            setattr(new, name, value)
        return new

    @property
    def layout(self) -> Layout:
        return self.pieces[0].layout

    @property
    def scale(self) -> float:
        return self.layout.scale

    @property
    def units(self) -> int:
        return self.layout.units

    @property
    def num_particles(self) -> int:
        return self.log_p.shape[0]

    @property
    def model_trace(self):
        return self.pieces[0].model_trace

    @property
    def guide_trace(self):
        return self.pieces[0].guide_trace

    @property
    def subsamples(self):
        """A trace of the model's subsample sites (the plates' indices), for ``poutine.replay``."""
        out = poutine.Trace()
        for name, node in self.pieces[0].full_model_trace.nodes.items():
            if site_is_subsample(node):
                out.add_node(name, **node)
        return out

    @property
    def log_w(self) -> torch.Tensor:
        return self.log_p - self.log_q

    @property
    def log_w_reparam(self) -> torch.Tensor:
        """``log_w`` without the direct gradient of the score-function sites' log q
        (whose expectation is zero), as in Pyro's ``Trace_ELBO``."""
        nr = self.log_q_nonreparam
        return self.log_w + (nr - nr.detach()) if nr.requires_grad else self.log_w

    def rb_score(self, centre: torch.Tensor | None = None, norm: float = 1.0) -> torch.Tensor:
        r"""Per particle, :math:`\sum_j \mathrm{sg}((r_j - c_j) / \nu)\,(\ell_j - \mathrm{sg}(\ell_j))`
        over the score-function guide sites ``j``, with :math:`\ell_j` their
        unscaled log density and :math:`r_j` Pyro's ``Trace_ELBO`` learning
        signal: every scaled term of ``log p - log q`` that no plate separates
        from ``j`` (terms in the same plates at other indices are left out).
        Its value is 0; its gradient is the score-function estimator's.

        :param centre: a baseline per unit, ``(k or 1, units)``, in the scale of
            ``log_w``; subtracted from the signal of sites in the data plate (all
            sites, for a single unit).
        :param norm: divides the centred signal (NVIL's variance normalization).
        """
        parts = [p.rb_score(centre, norm, self.signal_shift) for p in self.pieces]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def guide_sites(self) -> list[dict]:
        return [s for p in self.pieces for s in _sample_sites(p.guide_trace) if not s["is_observed"]]

    def guide_only_sites(self) -> list[str]:
        """Observed sites and factors of the guide."""
        return sorted({s["name"] for p in self.pieces for s in _sample_sites(p.guide_trace)
                       if s["is_observed"]})

    def log_q_path(self) -> torch.Tensor:
        """``log q`` whose gradient with respect to the latent sites' parameters is
        the path derivative only, through the samples (STL, DReG); flows without an
        inverse included. The guide's observed sites and factors keep their gradient."""
        parts = []
        for p in self.pieces:
            total = torch.zeros(())
            for site in _sample_sites(p.guide_trace):
                fn = None if site["is_observed"] else path_log_prob
                total = total + p.layout.site(site, log_prob=fn)
            parts.append(total.expand(p.layout.k, p.layout.units))
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def log_w_path(self) -> torch.Tensor:
        """``log_w`` with the guide's score term removed: the same value, and
        with respect to the guide's parameters only the path derivative."""
        log_w = self.log_p - self.log_q_path()
        return log_w if self.path_adjust is None else log_w + self.path_adjust()

    def non_reparameterized_sites(self) -> list[str]:
        """Guide sites whose distribution has no ``rsample`` (factors declared with
        ``has_rsample=False`` and such observed sites included)."""
        return sorted({s["name"] for p in self.pieces for s in _sample_sites(p.guide_trace)
                       if not getattr(s["fn"], "has_rsample", False)})

    def global_sites(self) -> list[str]:
        """The sample sites outside the data plate (all of them, without one)."""
        frame = self.data_frame
        return sorted({s["name"] for p in self.pieces for t in (p.model_trace, p.guide_trace)
                       for s in _sample_sites(t) if not _in_frame(_frames(s), frame)})

    def require_per_datapoint(self, what: str) -> None:
        """Raises a clear error unless every sample site is under a data plate,
        so that the units are its datapoints."""
        if self.data_frame is None:
            raise ValueError(
                f"{what} gives one value per datapoint, but the model has no vectorized data plate "
                "that all its observed sites sit in; put them under "
                "`with pyro.plate('data', batch_size):`, or pass data_plate='name'")
        outside = self.global_sites()
        if outside:
            raise ValueError(
                f"{what} gives one value per datapoint, which needs every sample site under the data "
                f"plate {self.data_frame.name!r}, but {outside} are outside it (global sites couple "
                "the datapoints). Use an objective's loss for the whole batch's bound instead")

    def unit_inputs(self) -> torch.Tensor:
        """The model's observed values per unit, ``(units, features)``: per datapoint,
        or one row of everything for a single unit (see :func:`unit_inputs`)."""
        return unit_inputs(self.model_trace, self.layout.frame, self.layout.nesting)


def unit_inputs(model_trace, frame, nesting: int | None = None) -> torch.Tensor:
    """The values of ``model_trace``'s observed sites (factors aside) as a
    ``(units, features)`` tensor: each datapoint's values of the sites in the data
    plate ``frame`` in one row, or everything flattened into one row when
    ``frame`` is ``None``. ``nesting``: the model's plate dims (default: read
    from the trace). Raises ``ValueError`` when there are none."""
    if nesting is None:
        dims = [f.dim for s in _sample_sites(model_trace) for f in _frames(s)]
        nesting = -min(dims) if dims else 0
    sites = data_sites(model_trace)
    if frame is not None:
        sites = [s for s in sites if _in_frame(_frames(s), frame)]
    if not sites:
        where = f"under the data plate {frame.name!r}" if frame is not None else ""
        raise ValueError(f"the model has no observed sites {where} to read the data from")
    rows = []
    for s in sites:
        v = s["value"].detach()
        v = v if v.is_floating_point() else v.to(torch.get_default_dtype())
        batch = v.dim() - s["fn"].event_dim
        if batch > nesting:  # values with a particle dim: the first particle's
            v = v.reshape((-1,) + v.shape[batch - nesting:])[0]
            batch = nesting
        if frame is None:
            rows.append(v.reshape(1, -1))
            continue
        d = batch + frame.dim
        if d < 0 or v.shape[d] == 1:
            v = v.reshape((1,) + v.shape).expand((frame.size,) + v.shape) if d < 0 else \
                v.movedim(d, 0).expand((frame.size,) + v.movedim(d, 0).shape[1:])
        else:
            v = v.movedim(d, 0)
        rows.append(v.reshape(frame.size, -1))
    return torch.cat(rows, -1)


def _trace_pair(model: Callable, guide: Callable, args: tuple, kwargs: dict, nesting: int,
                detach_samples: bool):
    """The model trace (with its subsample sites, the plates' indices) and the guide trace."""
    with DetachSamples() if detach_samples else contextlib.nullcontext():
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    if is_validation_enabled():
        check_model_guide_match(model_trace, guide_trace, nesting)
        check_if_enumerated(guide_trace)
    return model_trace, prune_subsample_sites(guide_trace)


def _particle_plate(fn: Callable, k: int, nesting: int) -> Callable:
    plate = pyro.plate(PARTICLE_PLATE, k, dim=-nesting - 1)

    def wrapped(*args, **kwargs):
        try:
            with plate:
                return fn(*args, **kwargs)
        except ValueError as e:
            if "collide" in str(e) and PARTICLE_PLATE in str(e):
                raise ValueError(
                    f"the model or guide has a plate at dim {-nesting - 1}, where the objective's "
                    f"particle plate sits (max_plate_nesting={nesting}); pass max_plate_nesting = "
                    "the number of nested plates, or leave it unset to guess it") from e
            raise
    return wrapped


def log_weights(
    model: Callable,
    guide: Callable,
    args: tuple = (),
    kwargs: dict | None = None,
    num_particles: int = 1,
    max_plate_nesting: int | float | None = None,
    data_plate: str | None = None,
    use_scale: bool = True,
    detach_samples: bool = False,
    vectorize: bool = True,
    joint: bool = True,
) -> LogWeights:
    """Runs ``guide`` and ``model`` for ``num_particles`` particles and returns
    their log densities per unit (see the module docstring).

    :param max_plate_nesting: the model's nested plates; ``None`` or ``inf``:
        guessed from a first trace (:func:`guess_max_plate_nesting`).
    :param data_plate: the data plate's name (default: found from the observed sites).
    :param use_scale: apply the sites' scales (e.g. KL annealing by
        ``poutine.scale``, subsampling); evaluation passes ``False`` for exact densities.
    :param detach_samples: draw the guide's samples without gradient (for
        score-function estimators).
    :param vectorize: draw the particles in one vectorized plate; ``False``: one
        trace per particle (models whose code cannot be vectorized).
    :param joint: the particles are importance weighted together (IWAE and
        kin), so that global sites make the batch a single unit; ``False`` for
        objectives that average their particles.
    """
    kwargs = kwargs or {}
    if num_particles < 1:
        raise ValueError(f"num_particles must be >= 1; got {num_particles}")
    nesting = None if max_plate_nesting in (None, math.inf) else int(max_plate_nesting)
    vectorized = vectorize and num_particles > 1
    if vectorized:
        if nesting is None:
            nesting = guess_max_plate_nesting(model, guide, args, kwargs)
        pairs = [_trace_pair(_particle_plate(model, num_particles, nesting),
                             _particle_plate(guide, num_particles, nesting), args, kwargs,
                             nesting + 1, detach_samples)]
    else:
        pairs = [_trace_pair(model, guide, args, kwargs, math.inf if nesting is None else nesting,
                             detach_samples) for _ in range(num_particles)]
        if nesting is None:
            dims = [f.dim for pair in pairs for t in pair for s in _sample_sites(t) for f in _frames(s)]
            nesting = -min(dims) if dims else 0
    frame = data_frame = find_data_plate(pairs[0][0], data_plate)
    if frame is not None and joint and num_particles > 1:
        for pair in pairs:
            if any(not _in_frame(_frames(s), frame) for t in pair for s in _sample_sites(t)):
                frame = None
                break
    if frame is None:
        units, scale = 1, 1.0
    else:
        units = frame.size
        scale = (frame.full_size or frame.size) / frame.size if use_scale else 1.0
        for pair in pairs[1:]:
            other = find_data_plate(pair[0], frame.name)
            if other.size != units:
                raise ValueError(f"the data plate {frame.name!r} has size {units} in one particle and "
                                 f"{other.size} in another; it must be the same for all particles")
    k = num_particles if vectorized else 1
    layout = Layout(k, nesting, frame, units, scale, use_scale)
    pieces = [_Piece(m, g, layout, detach_samples) for m, g in pairs]
    check = nesting + (1 if vectorized else 0) if is_validation_enabled() else None
    for p in pieces:
        p.build(check)
    return LogWeights(pieces, data_frame)
