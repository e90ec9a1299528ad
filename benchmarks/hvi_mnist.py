"""Hamiltonian variational inference against the diagonal guide (issue 5, figure 1).

The foundation's VAE (784-200-200-z50, tanh) on static binarized MNIST, trained with
Pyro's Trace_ELBO on an equal wall-clock budget with the diagonal guide and with
HVI (T Hamiltonian transitions of L leapfrog steps), then evaluated on ``--limit``
test images (a fixed random subset): test ELBO and IWAE-k log-likelihood. A run
folder that holds a trained model is evaluated again, not trained again.

    python benchmarks/hvi_mnist.py --data-root ../shared/data --budget 600 --out runs/hvi

Writes ``compare``'s ``results.md``, ``results.json`` and ``curves.png`` into OUT.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from pyro_deepgen.experiment import RunConfig, evaluate_run, sample_run, train_run, write_report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--transitions", default="0,1,4", help="T of each run (0: the diagonal guide)")
    p.add_argument("--leapfrog", type=int, default=5, help="L, leapfrog steps per transition")
    p.add_argument("--budget", type=float, default=600.0, help="training seconds per run")
    p.add_argument("--num-samples", type=int, default=500, help="k of the test IWAE-k")
    p.add_argument("--limit", type=int, default=1000, help="test images evaluated")
    p.add_argument("--data-root", default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="runs/hvi")
    args = p.parse_args()
    base = RunConfig(dataset="binarized_mnist", hidden=(200, 200), z_dim=50, epochs=100000,
                     max_time=args.budget, seed=0, data_root=args.data_root, device=args.device,
                     hvi_leapfrog=args.leapfrog)
    configs = [dataclasses.replace(base, hvi=int(t)) for t in args.transitions.split(",")]
    out = Path(args.out)
    t0 = time.perf_counter()
    for cfg in configs:  # as experiment.compare_runs, but a finished run is not trained again
        if not (out / cfg.name / "model.json").exists():
            train_run(cfg, out / cfg.name, progress=False)
        evaluate_run(out / cfg.name, num_samples=args.num_samples, seed=cfg.seed, limit=args.limit)
        sample_run(out / cfg.name, out / f"samples_{cfg.name}.png", seed=cfg.seed)
    write_report(configs, out)
    print(f"{time.perf_counter() - t0:.0f} s")
    print((Path(args.out) / "results.md").read_text())


if __name__ == "__main__":
    main()
