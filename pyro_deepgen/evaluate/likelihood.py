"""Per-datapoint log-likelihood and ELBO estimates for any model/guide pair."""

from __future__ import annotations

import math
from typing import Callable

import pyro
import torch
from torch.utils.data import Dataset

from pyro_deepgen.evaluate.batches import iterate_batches, model_args
from pyro_deepgen.evaluate.compiled import CompiledChunks, even_chunks
from pyro_deepgen.infer.weights import guess_max_plate_nesting, log_weights

__all__ = ["log_likelihood", "elbo", "log_likelihood_batch", "CPU_COMPILED_ROWS"]

#: (particle, datapoint) rows per compiled IWAE chunk on the CPU: with 4096 rows the
#: 784-200-200-50 VAE's IWAE-5000 ran at 88 % of ``torch.addmm``'s throughput on the
#: project's 2-core machine, with 65536 rows at 66 %
CPU_COMPILED_ROWS = 4096


@torch.no_grad()
def log_likelihood_batch(
    model: Callable,
    guide: Callable,
    args: tuple,
    num_samples: int = 5000,
    max_rows: int = 65536,
    max_plate_nesting: int | None = None,
    compiled: CompiledChunks | None = None,
) -> torch.Tensor:
    r"""The IWAE-k estimate of :math:`\log p(x)` for each datapoint of one batch,
    :math:`\log \frac1k \sum_i p(x, z_i)/q(z_i|x)`, drawing the ``k`` particles
    in chunks of at most ``max_rows // batch`` so that memory stays bounded.

    Every sample site must be under the data plate (global sites couple the
    datapoints: a ``ValueError`` names them).

    :param max_plate_nesting: the model's plates (default: guessed from a trace).
    :param compiled: a :class:`~pyro_deepgen.evaluate.compiled.CompiledChunks` for
        ``model`` and ``guide``: chunks of equal size run as its compiled program.
    """
    batch = args[0].shape[0]
    chunk = max(1, min(num_samples, max_rows // max(batch, 1)))
    parts = []
    with pyro.validation_enabled(False):
        if compiled is not None:
            for c in even_chunks(num_samples, chunk):
                parts.append(compiled(args, c))
        else:
            if max_plate_nesting is None:
                max_plate_nesting = guess_max_plate_nesting(model, guide, args)
            done = 0
            while done < num_samples:
                c = min(chunk, num_samples - done)
                w = log_weights(model, guide, args, {}, c, max_plate_nesting, use_scale=False)
                w.require_per_datapoint("log_likelihood")
                parts.append(torch.logsumexp(w.log_w, dim=0))
                done += c
    return torch.logsumexp(torch.stack(parts), dim=0) - math.log(num_samples)


def _per_datapoint(fn: Callable[[tuple], torch.Tensor], dataset: Dataset, batch_size: int,
                   pass_labels: bool, device) -> torch.Tensor:
    out = [fn(model_args(b, pass_labels, device)).cpu() for b in iterate_batches(dataset, batch_size)]
    return torch.cat(out)


def log_likelihood(
    model: Callable,
    guide: Callable,
    dataset: Dataset,
    num_samples: int = 5000,
    batch_size: int = 100,
    max_rows: int = 65536,
    pass_labels: bool = False,
    device: torch.device | str | None = None,
    max_plate_nesting: int | None = None,
    compiled: bool | str = False,
    compiled_rows: int | None = None,
) -> torch.Tensor:
    r"""One IWAE-``num_samples`` estimate of :math:`\log p(x)` per datapoint
    (Burda et al. 2016, arXiv:1509.00519), as a tensor of shape ``(len(dataset),)``.

    Works for any model/guide pair whose sample sites are all under a data plate
    (:mod:`pyro_deepgen.infer.weights`); a model with global sites gets an error
    that names them. Particles are drawn in chunks of at most
    ``max_rows`` (particles x datapoints) rows, which bounds memory.

    ``compiled``: ``True`` (or a backend name, ``"inductor"`` or ``"fx"``) runs the
    chunks as a compiled static program (:mod:`pyro_deepgen.evaluate.compiled`),
    in equal chunks of at most ``compiled_rows`` rows; the estimator is the same.
    ``compiled_rows`` defaults to :data:`CPU_COMPILED_ROWS` on the CPU and to
    ``max_rows`` elsewhere: on the CPU, small chunks keep the decoder's output in
    cache for the fused kernel that reads it (see docs/benchmarks.md).
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1; got {num_samples}")
    chunks = None
    if compiled:
        backend = compiled if isinstance(compiled, str) else "inductor"
        chunks = CompiledChunks(model, guide, max_plate_nesting, backend=backend)
        if compiled_rows is None:
            on_cpu = device is None or torch.device(device).type == "cpu"
            compiled_rows = CPU_COMPILED_ROWS if on_cpu else max_rows
        if compiled_rows < 1:
            raise ValueError(f"compiled_rows must be >= 1; got {compiled_rows}")
        max_rows = min(max_rows, compiled_rows)
    return _per_datapoint(
        lambda a: log_likelihood_batch(model, guide, a, num_samples, max_rows, max_plate_nesting,
                                       chunks),
        dataset, batch_size, pass_labels, device)


@torch.no_grad()
def elbo(
    model: Callable,
    guide: Callable,
    dataset: Dataset,
    num_samples: int = 1,
    batch_size: int = 500,
    pass_labels: bool = False,
    device: torch.device | str | None = None,
    max_plate_nesting: int | None = None,
) -> torch.Tensor:
    r"""A per-datapoint estimate of the ELBO, :math:`\mathbb{E}_q[\log p(x,z) - \log q(z|x)]`,
    averaged over ``num_samples`` draws; shape ``(len(dataset),)``. Every sample site
    must be under the data plate."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1; got {num_samples}")

    def one(a: tuple) -> torch.Tensor:
        with pyro.validation_enabled(False):
            w = log_weights(model, guide, a, {}, num_samples, max_plate_nesting, use_scale=False)
        w.require_per_datapoint("elbo")
        return w.log_w.mean(0)

    return _per_datapoint(one, dataset, batch_size, pass_labels, device)
