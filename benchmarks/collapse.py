"""Posterior collapse with and without remedies (issue: KL annealing, free bits).

Three settings, each trained as a plain VAE, with a linear KL warm-up, and with
free bits, on an equal wall-clock budget, then evaluated on the test split
(IWAE-k log-likelihood, KL per unit, active units, mutual information):

* ``mnist-1``: the Burda et al. 1-layer VAE (784-200-200-z50, tanh) on static
  binarized MNIST;
* ``mnist-deep``: the same with a deeper encoder and decoder (4 hidden layers);
* ``mnist-dlgm``: the two-stochastic-layer DLGM of Burda et al. (z 100 then 50);
* ``frey``: Frey faces with a learned-variance Gaussian decoder (z=20);
* ``frey-50``: the same with z=50, and ``frey-50-fixed`` with the decoder's
  scale fixed at 0.03 (about the learned decoder's mean scale at z=20).

    python benchmarks/collapse.py --data-root ../shared/data --budget 240 --out runs/collapse

Each setting writes ``compare``'s ``results.md``, ``results.json`` and
``kl_units.png`` into ``OUT/<setting>``.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from pyro_deepgen.experiment import RunConfig, compare_runs

SETTINGS = {
    "mnist-1": dict(dataset="binarized_mnist", hidden=(200, 200), z_dim=50),
    "mnist-deep": dict(dataset="binarized_mnist", hidden=(200, 200, 200, 200), z_dim=50),
    "mnist-dlgm": dict(dataset="binarized_mnist", model="dlgm", z_dims=(100, 50),
                       extra={"hidden": [[200, 200], [100, 100]]}),
    "frey": dict(dataset="frey", hidden=(200,), z_dim=20, likelihood="gaussian"),
    "frey-50": dict(dataset="frey", hidden=(200,), z_dim=50, likelihood="gaussian"),
    "frey-50-fixed": dict(dataset="frey", hidden=(200,), z_dim=50, likelihood="gaussian",
                          extra={"decoder_scale": 0.03}),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--settings", default=",".join(SETTINGS))
    p.add_argument("--budget", type=float, default=240.0, help="training seconds per run")
    p.add_argument("--warmup", type=int, default=10000, help="KL warm-up steps")
    p.add_argument("--free-bits", type=float, default=0.5, help="nats per unit")
    p.add_argument("--num-samples", type=int, default=500, help="k of the test IWAE-k")
    p.add_argument("--data-root", default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="runs/collapse")
    args = p.parse_args()
    for setting in args.settings.split(","):
        base = RunConfig(**SETTINGS[setting], epochs=100000, max_time=args.budget, seed=0,
                         data_root=args.data_root, device=args.device)
        configs = [base, dataclasses.replace(base, kl_warmup=args.warmup),
                   dataclasses.replace(base, free_bits=args.free_bits)]
        t0 = time.perf_counter()
        compare_runs(configs, Path(args.out) / setting, num_samples=args.num_samples, progress=False)
        print(f"{setting}: {time.perf_counter() - t0:.0f} s")
        print((Path(args.out) / setting / "results.md").read_text())


if __name__ == "__main__":
    main()
