"""Monte Carlo EM against the VAE on Frey faces (issue 5, figure 3).

As in Kingma & Welling (2014, arXiv:1312.6114, figure 2): a Gaussian decoder with one
hidden layer on Frey faces, trained by the reparameterized ELBO (the VAE) and by MCEM
(persistent HMC chains per image, ``pyro_deepgen.infer.MCEM``) on an equal
wall-clock budget. MCEM's guide is trained by the ELBO alongside, only so that it has
a lower bound to report; the curves are the validation ELBO per epoch.

    python benchmarks/mcem_frey.py --data-root ../shared/data --budget 300 --out runs/mcem

Writes ``compare``'s ``results.md``, ``results.json`` and ``curves.png``, and
``bound_curves.png`` (the bound against epoch and against seconds) into OUT.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from pyro_deepgen import plots
from pyro_deepgen.experiment import RunConfig, compare_runs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--objectives", default="elbo,mcem")
    p.add_argument("--z-dim", type=int, default=10)
    p.add_argument("--budget", type=float, default=300.0, help="training seconds per run")
    p.add_argument("--num-samples", type=int, default=1000, help="k of the test IWAE-k")
    p.add_argument("--data-root", default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="runs/mcem")
    args = p.parse_args()
    base = RunConfig(dataset="frey", likelihood="gaussian", hidden=(200,), z_dim=args.z_dim,
                     batch_size=100, epochs=100000, max_time=args.budget, seed=0,
                     data_root=args.data_root, device=args.device)
    configs = [dataclasses.replace(base, objective=o) for o in args.objectives.split(",")]
    t0 = time.perf_counter()
    compare_runs(configs, args.out, num_samples=args.num_samples, progress=False)
    print(f"{time.perf_counter() - t0:.0f} s")
    out = Path(args.out)
    histories = {c.name: json.loads((out / c.name / "history.json").read_text()) for c in configs}
    plots.save_figure(plots.bound_curves(histories, title="Frey faces: VAE against MCEM"),
                      out / "bound_curves.png")
    print((Path(args.out) / "results.md").read_text())


if __name__ == "__main__":
    main()
