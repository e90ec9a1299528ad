"""Per-datapoint log importance weights from vectorized Pyro traces.

Every objective and evaluator in pyro_deepgen reduces a model/guide pair to
tensors of shape ``(num_particles, batch)``: the log joint ``log p(x, z)``,
the guide's ``log q(z|x)``, and the part of ``log q`` that comes from
non-reparameterized (score-function) sites. Pyro's own
``vectorized_importance_weights`` sums over the data plate; this keeps it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import pyro
import torch
from pyro import poutine
from pyro.infer.util import is_validation_enabled
from pyro.poutine.util import prune_subsample_sites
from pyro.util import check_model_guide_match

__all__ = ["LogWeights", "log_weights", "PARTICLE_PLATE"]

PARTICLE_PLATE = "particles"


@dataclass
class LogWeights:
    """Per-particle, per-datapoint log densities, each of shape ``(k, batch)``.

    ``scale`` is the data plate's subsampling scale (``full_size / size``).
    """

    log_p: torch.Tensor
    log_q: torch.Tensor
    log_q_score: torch.Tensor
    scale: float
    model_trace: Any
    guide_trace: Any

    @property
    def log_w(self) -> torch.Tensor:
        return self.log_p - self.log_q


def _data_frame(site: dict, data_plate: str):
    for frame in site["cond_indep_stack"]:
        if frame.name == data_plate:
            return frame
    raise ValueError(
        f"sample site {site['name']!r} is outside the {data_plate!r} plate; per-datapoint "
        f"objectives need every sample site under pyro.plate({data_plate!r}, ..., dim=-1)"
    )


def _site_log_prob(
    site: dict, k: int, batch: int, max_plate_nesting: int, data_dim: int, plate_scale: float,
    use_scale: bool,
) -> torch.Tensor:
    lp = site["fn"].log_prob(site["value"])
    if site["mask"] is not None:
        lp = lp * site["mask"]
    if use_scale and not (isinstance(site["scale"], float) and site["scale"] == plate_scale):
        lp = lp * (site["scale"] / plate_scale)
    n = max_plate_nesting + 1
    if lp.dim() > n:
        raise ValueError(
            f"site {site['name']!r} has batch shape {tuple(lp.shape)} with more than "
            f"max_plate_nesting={max_plate_nesting} plate dims; move event dims with .to_event()"
        )
    lp = lp.reshape((1,) * (n - lp.dim()) + lp.shape)
    keep = {0, n + data_dim}
    other = [d for d in range(n) if d not in keep]
    if other:
        lp = lp.sum(other, keepdim=True)
    return lp.reshape(lp.shape[0], lp.shape[n + data_dim]).expand(k, batch)


def log_weights(
    model: Callable,
    guide: Callable,
    args: tuple = (),
    kwargs: dict | None = None,
    num_particles: int = 1,
    max_plate_nesting: int = 1,
    data_plate: str = "data",
    use_scale: bool = True,
) -> LogWeights:
    """Runs ``guide`` and ``model`` once, vectorized over ``num_particles`` in an
    outer plate, and returns per-datapoint log densities.

    :param use_scale: apply each site's scale relative to the data plate's
        subsampling scale (e.g. KL annealing by ``poutine.scale``); evaluation
        passes ``False`` to get the exact densities.
    """
    kwargs = kwargs or {}
    if num_particles < 1:
        raise ValueError(f"num_particles must be >= 1; got {num_particles}")
    plate = pyro.plate(PARTICLE_PLATE, num_particles, dim=-max_plate_nesting - 1)
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
    batch, data_dim = frame.size, frame.dim
    plate_scale = (frame.full_size or frame.size) / frame.size
    k = num_particles
    log_p = torch.zeros(())
    log_q = torch.zeros(())
    log_q_score = torch.zeros(())
    for site in model_trace.nodes.values():
        if site["type"] == "sample":
            _data_frame(site, data_plate)
            log_p = log_p + _site_log_prob(
                site, k, batch, max_plate_nesting, data_dim, plate_scale, use_scale)
    for site in guide_trace.nodes.values():
        if site["type"] == "sample" and not site["is_observed"]:
            _data_frame(site, data_plate)
            lq = _site_log_prob(site, k, batch, max_plate_nesting, data_dim, plate_scale, use_scale)
            log_q = log_q + lq
            if not getattr(site["fn"], "has_rsample", False):
                log_q_score = log_q_score + lq
    device = log_p.device
    return LogWeights(
        log_p=log_p.expand(k, batch),
        log_q=log_q.to(device).expand(k, batch),
        log_q_score=log_q_score.to(device).expand(k, batch),
        scale=plate_scale,
        model_trace=model_trace,
        guide_trace=guide_trace,
    )
