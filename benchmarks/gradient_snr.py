"""Gradient signal-to-noise ratio against the number of particles k, for IWAE's
standard gradient and for DReG (Rainforth et al. 2018, "Tighter Variational
Bounds are Not Necessarily Better", arXiv:1802.04537; Tucker et al. 2019,
"Doubly Reparameterized Gradient Estimators for Monte Carlo Objectives",
arXiv:1810.04152).

    python benchmarks/gradient_snr.py RUN_DIR --ks 1,5,50,500 --draws 200 --batch 20 \
        --out docs/_static/gradient_snr.png
    python benchmarks/gradient_snr.py --gaussian --ks 1,10,100,1000 --draws 1000 \
        --out docs/_static/gradient_snr_gaussian.png

With a run folder: at the run's parameters and one fixed batch of training
images, each configuration draws ``--draws`` independent gradients (no
optimizer step) and reports the mean and median over elements of
|E[g]| / std[g], separately for the guide (encoder) and the model (decoder)
parameters, with the importance weights' effective sample size at each k.

``--gaussian``: Rainforth et al.'s 20-dimensional Gaussian model instead,
z ~ N(mu, I), x | z ~ N(z, I), one datapoint, with the guide
N(Ax + b, 2/3 I) whose A and b are the optimum perturbed by N(0, 0.01^2).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch

from pyro_deepgen import plots
from pyro_deepgen.diagnostics import gradient_snr
from pyro_deepgen.infer import IWAE
from pyro_deepgen.infer.weights import log_weights


class Gaussian:
    """Rainforth et al.'s (2018, section 4) Gaussian model and perturbed guide."""

    def __init__(self, dim: int = 20, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.mu = torch.randn(dim, generator=g)
        self.x = (self.mu + torch.randn(dim, generator=g) + torch.randn(dim, generator=g)).unsqueeze(0)
        # the exact posterior is N((mu + x) / 2, I / 2)
        self.a = torch.eye(dim) / 2 + 0.01 * torch.randn(dim, dim, generator=g)
        self.b = self.mu / 2 + 0.01 * torch.randn(dim, generator=g)

    def model(self, x: torch.Tensor) -> None:
        mu = pyro.param("model.mu", self.mu.clone())
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(mu, 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        a, b = pyro.param("guide.a", self.a.clone()), pyro.param("guide.b", self.b.clone())
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.Normal(x @ a.T + b, math.sqrt(2 / 3)).to_event(1))


@torch.no_grad()
def effective_sample_size(model, guide, x: torch.Tensor, k: int, repeats: int = 10) -> float:
    """The mean over datapoints and repeats of 1 / sum(normalized weight^2) at k particles."""
    ess = [1 / torch.softmax(log_weights(model, guide, (x,), num_particles=k).log_w, 0).pow(2).sum(0)
           for _ in range(repeats)]
    return torch.stack(ess).mean().item()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("run", nargs="?", help="a trained VAE run folder")
    p.add_argument("--gaussian", action="store_true", help="Rainforth et al.'s Gaussian model instead")
    p.add_argument("--ks", default="1,5,50,500")
    p.add_argument("--draws", type=int, default=200)
    p.add_argument("--batch", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="gradient_snr.png")
    args = p.parse_args()
    if args.gaussian == bool(args.run):
        p.error("give a run folder or --gaussian, not both")
    if args.gaussian:
        toy = Gaussian(seed=args.seed)
        model, guide, x, prefixes = toy.model, toy.guide, toy.x, ("guide.", "model.")
    else:
        from pyro_deepgen.experiment import dataset_for, load_run_config
        from pyro_deepgen.models import load_model

        module = load_model(args.run)
        model, guide, prefixes = module.model, module.guide, ("vae.encoder", "vae.decoder")
        x = dataset_for(load_run_config(args.run), "train").tensors[0][:args.batch]
    rows = []
    for k in [int(v) for v in args.ks.split(",")]:
        pyro.set_rng_seed(args.seed)
        ess = effective_sample_size(model, guide, x, k)
        for gradient in ("standard", "dreg"):
            pyro.clear_param_store()
            pyro.set_rng_seed(args.seed)
            t = time.perf_counter()
            stats = gradient_snr(model, guide, IWAE(k, gradient=gradient), (x,), num_draws=args.draws)
            enc, dec = (stats.summary(stats.split(prefix)) for prefix in prefixes)
            rows.append({"k": k, "gradient": gradient, "ess": ess, "guide_snr": enc["snr"],
                         "guide_snr_median": enc["snr_median"], "model_snr": dec["snr"],
                         "guide_variance": enc["variance"], "seconds": time.perf_counter() - t})
            print(json.dumps(rows[-1]), flush=True)
    curves = {label: {group: [(r["k"], r[key]) for r in rows if r["gradient"] == gradient]
                      for group, key in (("guide parameters", "guide_snr"),
                                         ("model parameters", "model_snr"))}
              for gradient, label in (("standard", "IWAE"), ("dreg", "DReG"))}
    fig = plots.snr_against_k(curves)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    plots.save_figure(fig, args.out)
    Path(args.out).with_suffix(".json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
