"""Milliseconds per training step of the same VAE, in one run:

1. hand-written PyTorch (encoder, reparameterized sample, decoder, the same
   single-sample ELBO as ``Trace_ELBO``, Adam);
2. a bare Pyro loop: ``SVI(vae.model, vae.guide, Adam, Trace_ELBO()).step`` over
   shuffled mini-batches;
3. ``pyro_deepgen.train.fit`` on the same VAE and data, progress bar on.

    python benchmarks/overhead.py [--repeats 7] [--out docs/overhead.json]

Each timing is one pass over the 50000 static binarized MNIST training images
(``PYRO_DEEPGEN_DATA`` or ../shared/data); the three loops take turns, and the
median over repeats is reported.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Trace_ELBO
from torch.nn.functional import softplus

from pyro_deepgen.data import load_dataset
from pyro_deepgen.models import VAE
from pyro_deepgen.train import fit

DATA = os.environ.get("PYRO_DEEPGEN_DATA",
                      str(Path(__file__).resolve().parents[2] / "shared" / "data"))


def hand_written(x: torch.Tensor, batch: int) -> float:
    torch.manual_seed(0)
    vae = VAE(784, 50, (200, 200))
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    perm = torch.randperm(x.shape[0])
    steps = math.ceil(x.shape[0] / batch)
    t = time.perf_counter()
    for i in range(steps):
        xb = x[perm[i * batch:(i + 1) * batch]]
        loc, scale = vae.encoder(xb)
        z = loc + scale * torch.randn_like(loc)
        logits = vae.decoder(z)
        log_px = (xb * logits).sum(-1) - softplus(logits).sum(-1)
        log_pz = dist.Normal(0.0, 1.0).log_prob(z).sum(-1)
        log_qz = dist.Normal(loc, scale).log_prob(z).sum(-1)
        loss = -(log_px + log_pz - log_qz).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.perf_counter() - t) / steps * 1e3


def bare_svi(x: torch.Tensor, batch: int) -> float:
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    vae = VAE(784, 50, (200, 200))
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
    perm = torch.randperm(x.shape[0])
    steps = math.ceil(x.shape[0] / batch)
    t = time.perf_counter()
    for i in range(steps):
        svi.step(x[perm[i * batch:(i + 1) * batch]])
    return (time.perf_counter() - t) / steps * 1e3


def with_fit(data, batch: int) -> float:
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    vae = VAE(784, 50, (200, 200))
    steps = math.ceil(len(data) / batch)
    t = time.perf_counter()
    fit(vae.model, vae.guide, data, Trace_ELBO(), epochs=1, batch_size=batch, progress=True)
    return (time.perf_counter() - t) / steps * 1e3


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--batch-sizes", default="128,1024")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    data = load_dataset("binarized_mnist", "train", root=DATA)
    x = data.tensors[0]
    rows = []
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        times: dict[str, list[float]] = {"hand-written PyTorch": [], "bare Pyro SVI loop": [], "fit": []}
        for _ in range(args.repeats):
            times["hand-written PyTorch"].append(hand_written(x, batch))
            times["bare Pyro SVI loop"].append(bare_svi(x, batch))
            times["fit"].append(with_fit(data, batch))
        med = {k: statistics.median(v) for k, v in times.items()}
        for k, v in med.items():
            rows.append({"batch": batch, "config": k, "ms_per_step": v,
                         "vs_hand_written": v / med["hand-written PyTorch"],
                         "vs_bare_svi": v / med["bare Pyro SVI loop"], "all": times[k]})
    print(f"torch {torch.__version__}, pyro {pyro.__version__}, threads {torch.get_num_threads()}")
    print("| batch | loop | ms/step (median) | vs hand-written | vs bare SVI |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['batch']} | {r['config']} | {r['ms_per_step']:.2f} | {r['vs_hand_written']:.3f} "
              f"| {r['vs_bare_svi']:.3f} |")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
