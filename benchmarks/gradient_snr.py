"""Gradient signal-to-noise ratio against the number of particles k, for IWAE's
standard gradient and for DReG, on a trained VAE (Rainforth et al. 2018,
"Tighter Variational Bounds are Not Necessarily Better", arXiv:1802.04537, Fig. 1).

    python benchmarks/gradient_snr.py RUN_DIR --ks 1,5,50,500 --draws 100 --batch 20 \
        --out docs/_static/gradient_snr.png

At the run's parameters and one fixed batch of training images, each
configuration draws ``--draws`` independent gradients (no optimizer step) and
reports the mean over elements of |E[g]| / std[g], separately for the guide
(encoder) and the model (decoder) parameters.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pyro

from pyro_deepgen import plots
from pyro_deepgen.diagnostics import gradient_snr
from pyro_deepgen.experiment import dataset_for, load_run_config
from pyro_deepgen.infer import IWAE
from pyro_deepgen.models import load_model


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("run")
    p.add_argument("--ks", default="1,5,50,500")
    p.add_argument("--draws", type=int, default=100)
    p.add_argument("--batch", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="gradient_snr.png")
    args = p.parse_args()
    cfg = load_run_config(args.run)
    module = load_model(args.run)
    x = dataset_for(cfg, "train").tensors[0][:args.batch]
    rows = []
    for k in [int(v) for v in args.ks.split(",")]:
        for gradient in ("standard", "dreg"):
            pyro.clear_param_store()
            pyro.set_rng_seed(args.seed)
            t = time.perf_counter()
            stats = gradient_snr(module.model, module.guide, IWAE(k, gradient=gradient), (x,),
                                 num_draws=args.draws)
            enc, dec = stats.summary(stats.split("vae.encoder")), stats.summary(stats.split("vae.decoder"))
            rows.append({"k": k, "gradient": gradient, "guide_snr": enc["snr"], "model_snr": dec["snr"],
                         "guide_variance": enc["variance"], "seconds": time.perf_counter() - t})
            print(json.dumps(rows[-1]), flush=True)
    curves = {label: {group: [(r["k"], r[key]) for r in rows if r["gradient"] == gradient]
                      for group, key in (("guide (encoder) parameters", "guide_snr"),
                                         ("model (decoder) parameters", "model_snr"))}
              for gradient, label in (("standard", "IWAE"), ("dreg", "DReG"))}
    fig = plots.snr_against_k(curves)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    plots.save_figure(fig, args.out)
    Path(args.out).with_suffix(".json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
