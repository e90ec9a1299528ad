"""Evaluating a trained run folder, and drawing samples from it."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import pyro
import torch
from torch.utils.data import TensorDataset

from pyro_deepgen import plots
from pyro_deepgen.data import image_shape
from pyro_deepgen.diagnostics import kl_per_unit, mutual_information
from pyro_deepgen.evaluate import active_units, ais_log_likelihood, elbo, log_likelihood
from pyro_deepgen.models import bits_per_dim, load_model, model_spec
from pyro_deepgen.runs.config import COMPILE, dataset_for, load_run_config

__all__ = ["EVALUATION", "EVALUATION_METHODS", "LatentDecoder", "evaluate_run", "evaluation_subset",
           "sample_run"]

logger = logging.getLogger(__name__)

EVALUATION = "evaluation.json"
EVALUATION_METHODS = ("iwae", "ais")


@runtime_checkable
class LatentDecoder(Protocol):
    """A model with a decoder from a ``z_dim``-dimensional latent (its latent
    manifold is drawn when ``z_dim`` is 2)."""

    z_dim: int

    def decode(self, z: torch.Tensor) -> torch.Tensor: ...


def evaluation_subset(data: TensorDataset, limit: int) -> TensorDataset:
    """``limit`` datapoints of ``data`` drawn at random with a fixed seed, in their
    original order: the same subset for every run, and a fair sample of splits that
    are sorted (the binarized MNIST test split is ordered by label)."""
    n = len(data)
    if limit < 1:
        raise ValueError(f"limit must be >= 1; got {limit}")
    if limit >= n:
        return data
    keep = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:limit].sort().values
    return TensorDataset(*(t[keep] for t in data.tensors))


def evaluate_run(directory: str | os.PathLike, num_samples: int = 5000, split: str = "test",
                 batch_size: int = 100, device: str | None = None, limit: int | None = None,
                 seed: int = 0, method: str = "iwae", ais_steps: int = 500, ais_leapfrog: int = 5,
                 ais_chains: int = 16, ais_step_size: float = 0.1,
                 ais_from_guide: bool = False, compile: str | None = None) -> dict[str, Any]:
    """IWAE-``num_samples`` log-likelihood, ELBO and active units of a trained
    run on ``split``; writes ``evaluation.json`` and ``log_likelihood.pt``
    (per datapoint) into the run folder and returns the summary.

    ``method="ais"`` estimates the log-likelihood by annealed importance sampling
    instead (:func:`pyro_deepgen.evaluate.ais_log_likelihood`: ``ais_steps``
    annealing steps, ``ais_chains`` chains per datapoint, HMC with ``ais_leapfrog``
    leapfrog steps and an adapted step size that starts at ``ais_step_size``,
    from the prior or, with ``ais_from_guide``, from q(z|x)), adds ``method``, the
    AIS settings, ``ais_stderr`` (the Monte Carlo standard error of the mean) and
    ``ais_accept_rate``, and writes
    ``evaluation_ais.json`` and ``log_likelihood_ais.pt``, so that the IWAE
    evaluation stays.

    ``compile`` (``"none"``, ``"fx"``, ``"inductor"``; default: the run's
    setting) runs the IWAE chunks as a compiled static program."""
    if method not in EVALUATION_METHODS:
        raise ValueError(f"unknown evaluation method {method!r}; valid: {', '.join(EVALUATION_METHODS)}")
    if compile is not None and compile not in COMPILE:
        raise ValueError(f"unknown compile {compile!r}; valid: {', '.join(COMPILE)}")
    directory = Path(directory)
    cfg = load_run_config(directory)
    compile = cfg.compile if compile is None else compile
    device = device or cfg.device
    module = load_model(directory).to(device)
    data = dataset_for(cfg, split)
    if limit is not None:
        data = evaluation_subset(data, limit)
    # a fresh parameter store: after training in this process the store holds that module's
    # tensors under the same names, and pyro.module would not register the loaded ones
    with pyro.get_param_store().scope():
        pyro.set_rng_seed(seed)
        t0 = time.perf_counter()
        if method == "ais":
            ais = ais_log_likelihood(module.model, module.guide if ais_from_guide else None, data,
                                     num_steps=ais_steps, num_leapfrog=ais_leapfrog, step_size=ais_step_size,
                                     num_chains=ais_chains, batch_size=batch_size, device=device)
            ll = ais.log_likelihood
        else:
            ll = log_likelihood(module.model, module.guide, data, num_samples=num_samples,
                                batch_size=batch_size, device=device,
                                compiled=False if compile == "none" else compile)
        seconds = time.perf_counter() - t0
        el = elbo(module.model, module.guide, data, device=device)
        n = ll.numel()
        result = {
            "split": split, "num_datapoints": n, "num_samples": num_samples,
            "log_likelihood": ll.mean().item(),
            "log_likelihood_stderr": (ll.std().item() / math.sqrt(n)) if n > 1 else float("nan"),
            "elbo": el.mean().item(), "seconds": seconds,
        }
        if method == "ais":
            result.update({
                "method": "ais", "ais_steps": ais_steps, "ais_leapfrog": ais_leapfrog, "ais_chains": ais_chains,
                "ais_step_size": ais_step_size, "ais_from_guide": ais_from_guide,
                "ais_stderr": ais.stderr.pow(2).sum().sqrt().item() / n,
                "ais_accept_rate": ais.accept_rate.mean().item()})
        spec = model_spec(cfg.model)
        if spec.dequantize:
            result["bits_per_dim"] = float(bits_per_dim(result["log_likelihood"], data.tensors[0].shape[1]))
        extras = spec.evaluate_extras(module, data, device) if spec.evaluate_extras is not None else {}
        kls = kl_per_unit(module.model, module.guide, data, device=device)
        if kls:  # latent variables: collapse diagnostics
            result["kl_per_unit"] = {k: v.tolist() for k, v in kls.items()}
            result["kl"] = sum(v.sum().item() for v in kls.values())
        if kls and "active_units_per_site" not in extras:
            result["active_units_per_site"], result["latent_dim"] = {}, 0
            for site in kls:
                au = active_units(module.guide, data, site=site, device=device)
                result["active_units_per_site"][site] = au.num_active
                result["latent_dim"] += au.variance.numel()
            result["active_units"] = sum(result["active_units_per_site"].values())
        result.update(extras)
        if kls:
            try:
                result["mutual_information"] = mutual_information(module.guide, data, site=next(iter(kls)),
                                                                  device=device)
            except ValueError as e:  # e.g. a flow guide without an inverse
                logger.info("no mutual information: %s", e)
    suffix = "_ais" if method == "ais" else ""
    (directory / EVALUATION.replace(".json", f"{suffix}.json")).write_text(json.dumps(result, indent=2))
    torch.save(ll, directory / f"log_likelihood{suffix}.pt")
    return result


def sample_run(directory: str | os.PathLike, out: str | os.PathLike, n: int = 64,
               seed: int = 0) -> list[Path]:
    """Writes a grid of ``n`` samples to ``out``; for a 2-D latent space, also
    the latent manifold to ``<out stem>_manifold.png``. Returns the paths."""
    cfg = load_run_config(directory)
    module = load_model(directory)
    shape = image_shape(cfg.dataset)
    torch.manual_seed(seed)
    out = Path(out)
    plots.save_figure(plots.image_grid(module.sample(n), shape, title=f"{cfg.objective} samples"), out)
    paths = [out]
    if isinstance(module, LatentDecoder) and module.z_dim == 2:
        m = out.with_name(out.stem + "_manifold" + out.suffix)
        plots.save_figure(plots.latent_manifold(module.decode, shape, title="latent manifold"), m)
        paths.append(m)
    return paths
