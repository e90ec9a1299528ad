"""Variance of the guide's gradient under several objectives at one fixed
checkpoint (model and guide parameters frozen), e.g. the SBN of a compare run:

    python benchmarks/guide_variance.py runs/sbn-compare/vimco-5 \
        --objectives reinforce,nvil,vimco-5,rws-5,wake-sleep --draws 100 --batch 100

Objectives with learned baselines first train them at the checkpoint
(``warm_up_objective``), so each is measured as during training. Reports the
mean over the guide's parameters of the per-element variance and SNR.
"""

from __future__ import annotations

import argparse
import json

import pyro

from pyro_deepgen.diagnostics import gradient_snr, warm_up_objective
from pyro_deepgen.experiment import dataset_for, load_run_config
from pyro_deepgen.infer import make_objective
from pyro_deepgen.models import load_model


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("run")
    p.add_argument("--objectives", default="reinforce,nvil,vimco-5,rws-5,wake-sleep")
    p.add_argument("--draws", type=int, default=100)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--warm-up", type=int, default=300)
    p.add_argument("--guide-prefix", default=None, help="default: '<model name>.guide' or 'vae.encoder'")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    cfg = load_run_config(args.run)
    module = load_model(args.run)
    prefix = args.guide_prefix or {"sbn": "sbn.guide", "vae": "vae.encoder"}.get(cfg.model, "")
    x = dataset_for(cfg, "train").tensors[0][:args.batch]
    print("| objective | guide gradient variance | guide gradient SNR |")
    print("|---|---|---|")
    for name in args.objectives.split(","):
        pyro.clear_param_store()
        pyro.set_rng_seed(args.seed)
        loss = make_objective(name)
        warm_up_objective(module.model, module.guide, loss, (x,), steps=args.warm_up)
        stats = gradient_snr(module.model, module.guide, loss, (x,), num_draws=args.draws)
        s = stats.summary(stats.split(prefix))
        print(f"| {name} | {s['variance']:.4g} | {s['snr']:.3f} |", flush=True)
        print(json.dumps({"objective": name, **s}))


if __name__ == "__main__":
    main()
