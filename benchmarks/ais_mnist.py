"""AIS against IWAE-k on one trained VAE, and the BDMC gap (issue 5, figure 2).

Reads a trained run folder (e.g. the diagonal-guide VAE that ``benchmarks/hvi_mnist.py``
writes to ``OUT/elbo``), and on its first ``--limit`` test images measures IWAE-k and AIS
(from the prior, HMC transitions, Wu et al. 2017) through the one evaluation path,
``experiment.evaluate_run``, with the seconds each takes. Then BDMC on ``--bdmc``
datapoints simulated from the model: forward (lower) and reverse (upper) AIS bounds.

    python benchmarks/ais_mnist.py runs/hvi/elbo --limit 1000 --num-samples 5000 \
        --ais-steps 500 --ais-chains 8 --out runs/ais.json
"""

from __future__ import annotations

import argparse
import json
import time

import pyro
import torch
from torch.utils.data import TensorDataset

from pyro_deepgen.evaluate import bdmc
from pyro_deepgen.experiment import dataset_for, evaluate_run, load_run_config
from pyro_deepgen.models import load_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a trained run folder")
    p.add_argument("--limit", type=int, default=1000, help="test images")
    p.add_argument("--num-samples", type=int, default=5000, help="k of IWAE-k")
    p.add_argument("--ais-steps", type=int, default=500)
    p.add_argument("--ais-chains", type=int, default=8)
    p.add_argument("--ais-leapfrog", type=int, default=5)
    p.add_argument("--bdmc", type=int, default=100, help="simulated datapoints for BDMC")
    p.add_argument("--bdmc-steps", default="100,500", help="annealing steps of each BDMC run")
    p.add_argument("--out", default="runs/ais.json")
    args = p.parse_args()
    results = {}
    iwae = evaluate_run(args.run, num_samples=args.num_samples, limit=args.limit)
    results["iwae"] = {k: iwae[k] for k in ("log_likelihood", "log_likelihood_stderr", "elbo",
                                            "seconds", "num_samples", "num_datapoints")}
    print("IWAE", results["iwae"])
    ais = evaluate_run(args.run, method="ais", limit=args.limit, ais_steps=args.ais_steps,
                       ais_chains=args.ais_chains, ais_leapfrog=args.ais_leapfrog)
    results["ais"] = {k: v for k, v in ais.items() if not isinstance(v, (list, dict))}
    print("AIS", results["ais"])
    cfg = load_run_config(args.run)
    module = load_model(args.run)
    shape = TensorDataset(dataset_for(cfg, "test").tensors[0][:args.bdmc])
    results["bdmc"] = []
    for steps in (int(s) for s in args.bdmc_steps.split(",")):
        pyro.set_rng_seed(0)
        t0 = time.perf_counter()
        r = bdmc(module.model, None, shape, num_steps=steps, num_chains=args.ais_chains,
                 num_leapfrog=args.ais_leapfrog)
        row = {"steps": steps, "lower": r.lower.mean().item(), "upper": r.upper.mean().item(),
               "gap": r.gap.mean().item(), "gap_stderr": (r.gap.std() / r.gap.numel() ** 0.5).item(),
               "seconds": time.perf_counter() - t0, "num_datapoints": args.bdmc}
        results["bdmc"].append(row)
        print("BDMC", row)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    torch.set_grad_enabled(True)
    main()
