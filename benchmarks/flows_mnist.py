"""Flow guides against the diagonal guide on the foundation VAE (784-200-200-z50,
tanh) with static binarized MNIST, on an equal wall-clock budget of training each,
then IWAE-k on the test split (Rezende & Mohamed 2015, arXiv:1505.05770, Table 2;
Kingma et al. 2016, arXiv:1606.04934).

    python benchmarks/flows_mnist.py --data-root ../shared/data --budget 900 --num-samples 5000 \\
        --guides none,planar-16,iaf-4 --out runs/flows-mnist-900

Training runs the general Pyro path; evaluation runs IWAE as a compiled static
program (``--eval-compile``), which changes only the speed. Writes ``compare``'s
``results.md``, ``results.json`` and figures into ``--out``; each run's training
and evaluation seconds are in its ``history.json`` and ``evaluation.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from pyro_deepgen.experiment import COMPILE, RunConfig, compare_runs


def _guide(spec: str) -> dict:
    """``none`` or ``<flow>-<K>``."""
    if spec == "none":
        return {}
    flow, _, k = spec.rpartition("-")
    if not flow or not k.isdigit():
        raise ValueError(f"a guide is 'none' or '<flow>-<K>' (e.g. iaf-4); got {spec!r}")
    return {"flow": flow, "num_flows": int(k)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--guides", default="none,planar-16,iaf-4")
    p.add_argument("--budget", type=float, default=900.0, help="training seconds per run")
    p.add_argument("--num-samples", type=int, default=5000, help="k of the test IWAE-k")
    p.add_argument("--eval-compile", default="inductor", choices=COMPILE)
    p.add_argument("--dataset", default="binarized_mnist")
    p.add_argument("--data-root", default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/flows-mnist")
    args = p.parse_args()
    base = RunConfig(dataset=args.dataset, epochs=100000, max_time=args.budget, seed=args.seed,
                     data_root=args.data_root, device=args.device)
    configs = [dataclasses.replace(base, **_guide(g.strip())) for g in args.guides.split(",")]
    out = Path(args.out)
    compare_runs(configs, out, num_samples=args.num_samples, progress=False, compile=args.eval_compile)
    print((out / "results.md").read_text())


if __name__ == "__main__":
    main()
