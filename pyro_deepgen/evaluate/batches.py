"""Iterating a dataset in order, in batches, as model arguments."""

from __future__ import annotations

from typing import Iterator

import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites
from torch.utils.data import Dataset

__all__ = ["guide_site", "iterate_batches", "model_args"]


def model_args(batch: tuple, pass_labels: bool, device: torch.device | str | None) -> tuple:
    """The positional arguments for ``model``/``guide``: ``(x,)``, or all
    tensors when ``pass_labels``."""
    items = batch if pass_labels else batch[:1]
    return tuple(t.to(device) for t in items) if device is not None else tuple(items)


def iterate_batches(dataset: Dataset, batch_size: int) -> Iterator[tuple]:
    """Yields ``dataset[i:i+batch_size]`` as tuples of tensors, in order."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    n = len(dataset)
    for start in range(0, n, batch_size):
        batch = dataset[torch.arange(start, min(start + batch_size, n))]
        yield batch if isinstance(batch, tuple) else (batch,)


def guide_site(guide, args: tuple, site: str) -> dict:
    """Runs ``guide(*args)`` once and returns its sample site ``site``; a
    missing site is a ``ValueError`` that lists the guide's sample sites."""
    trace = prune_subsample_sites(poutine.trace(guide).get_trace(*args))
    if site not in trace.nodes:
        names = [n for n, s in trace.nodes.items() if s["type"] == "sample"]
        raise ValueError(f"the guide has no site {site!r}; its sample sites: {names}")
    return trace.nodes[site]
