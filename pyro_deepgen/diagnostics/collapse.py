"""Posterior-collapse diagnostics for any model/guide pair with a ``"data"`` plate."""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch.distributions import Independent, TransformedDistribution
from torch.utils.data import Dataset

from pyro_deepgen.evaluate.batches import guide_site, iterate_batches, model_args
from pyro_deepgen.infer.kl import paired_units, unit_kl
from pyro_deepgen.infer.weights import log_weights

__all__ = ["kl_per_unit", "mutual_information"]


@torch.no_grad()
def kl_per_unit(
    model: Callable,
    guide: Callable,
    dataset: Dataset,
    num_samples: int = 10,
    batch_size: int = 500,
    max_plate_nesting: int | None = None,
    pass_labels: bool = False,
    device: torch.device | str | None = None,
) -> dict[str, torch.Tensor]:
    r"""For each latent site, :math:`\mathbb{E}_x[\mathrm{KL}(q(z_j|x)\,\|\,p(z_j))]`
    per unit ``j`` (the elements of the site's event), averaged over ``dataset``.

    The KL is in closed form where ``torch.distributions.kl_divergence`` has one
    for the units' distributions (e.g. Normal guide, Normal prior); otherwise it
    is the average of :math:`\log q(z_j|x) - \log p(z_j)` over ``num_samples``
    draws. A conditional prior :math:`p(z_j|z_{\mathrm{parent}})` is taken at
    the guide's draws of the parents. The units' values sum to the ELBO's KL
    term (for a site that does not factorize, the site is one unit).

    Returns ``{site: tensor of shape (units,)}``, sites in the model's order.
    """
    totals: dict[str, torch.Tensor] = {}
    n = 0
    for batch in iterate_batches(dataset, batch_size):
        args = model_args(batch, pass_labels, device)
        w = log_weights(model, guide, args, {}, num_samples, max_plate_nesting, use_scale=False)
        w.require_per_datapoint("kl_per_unit")
        for name, ms in w.model_trace.nodes.items():
            if ms["type"] != "sample" or ms["is_observed"]:
                continue
            gs = w.guide_trace.nodes[name]
            lp, lq = paired_units(w.layout, ms, gs)
            kl = unit_kl(gs["fn"], ms["fn"])
            if kl is not None and kl.shape[-1] == lp.shape[-1]:
                kl = w.layout.tensor(gs, kl, 1)
            else:
                kl = lq - lp
            kl = kl.mean(0).sum(0).cpu()
            totals[name] = totals[name] + kl if name in totals else kl
        n += args[0].shape[0]
    if n == 0:
        raise ValueError("kl_per_unit needs a non-empty dataset")
    return {name: t / n for name, t in totals.items()}


@torch.no_grad()
def mutual_information(
    guide: Callable,
    dataset: Dataset,
    site: str = "z",
    batch_size: int = 500,
    pass_labels: bool = False,
    device: torch.device | str | None = None,
    allow_flows: bool = False,
) -> float:
    r"""The mutual information :math:`I(x; z)` under the guide's joint
    :math:`q(x, z) = p_{\mathrm{data}}(x)\, q(z|x)`, for latent ``site``:

    .. math:: I = \frac1N \sum_i \Big[\log q(z_i|x_i) - \log \frac1N \sum_n q(z_i|x_n)\Big],
              \quad z_i \sim q(z|x_i),

    with the aggregate posterior :math:`q(z)` taken as the mixture over all
    ``N`` datapoints. It is at most :math:`\log N`. Hoffman & Johnson, "ELBO
    surgery: yet another way to carve up the variational evidence lower bound",
    NIPS workshop 2016; this is the estimator of He et al., "Lagging Inference
    Networks and Posterior Collapse in Variational Autoencoders", 2019,
    arXiv:1901.05534.

    The guide's distribution at ``site`` must give a log density at any value;
    the cost is :math:`O(N^2)` density evaluations. A flow needs its inverse for
    each of them (an IAF one pass per latent dimension), so flows are refused
    unless ``allow_flows``.
    """
    fns, draws, own = [], [], []
    for batch in iterate_batches(dataset, batch_size):
        node = guide_site(guide, model_args(batch, pass_labels, device), site)
        inner = node["fn"]
        while isinstance(inner, Independent):
            inner = inner.base_dist
        if isinstance(inner, TransformedDistribution) and not allow_flows:
            raise ValueError(
                f"mutual_information evaluates the guide's density at {site!r} for other "
                "datapoints' draws, which a flow can only do through its inverse, N^2 times; "
                "pass allow_flows=True for a flow with a fast inverse")
        fns.append(node["fn"])
        draws.append(node["value"])
        own.append(node["fn"].log_prob(node["value"]))
    if not fns:
        raise ValueError("mutual_information needs a non-empty dataset")
    z = torch.cat(draws)
    n = z.shape[0]
    event = z[0].numel()
    chunk = max(1, int(2e7 // (n * event)))
    log_mix = []
    for start in range(0, n, chunk):
        zc = z[start:start + chunk].unsqueeze(1)  # (c, 1, *event): against every datapoint
        try:
            parts = [fn.log_prob(zc.expand((zc.shape[0], fn.batch_shape[0]) + zc.shape[2:]))
                     for fn in fns]
        except (NotImplementedError, RuntimeError, ValueError, KeyError) as e:
            raise ValueError(
                f"mutual_information evaluates the guide's density at {site!r} for other "
                f"datapoints' draws, which its distribution ({type(fns[0]).__name__}) cannot do: {e}"
            ) from e
        log_mix.append(torch.logsumexp(torch.cat(parts, dim=-1), dim=-1) - math.log(n))
    return (torch.cat(own) - torch.cat(log_mix)).mean().item()
