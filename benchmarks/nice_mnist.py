"""NICE on dequantized grey-level MNIST: test bits/dim, samples and inpainting
(Dinh, Krueger & Bengio 2014, "NICE: Non-linear Independent Components
Estimation", arXiv:1410.8516, Sec. 5).

    python benchmarks/nice_mnist.py --data-root ../shared/data --max-time 1800 \\
        --device cpu --out runs/nice_mnist

Only the 10000 labelled MNIST test images are available here, so a fixed random
permutation (``torch.Generator`` seeded with ``--split-seed``) trains on 9000 and
tests on the other 1000. Training uses uniform dequantization afresh every epoch
(``y = (k + u) / 256``, :func:`pyro_deepgen.models.dequantize`) and
:func:`pyro_deepgen.train.fit` with ``Trace_ELBO`` (exact maximum likelihood),
stopping after ``--max-time`` seconds of training. Unless ``--no-data-init``, the
diagonal scaling starts from :meth:`~pyro_deepgen.models.FlowModel.initialize_scale`
on the training images (not in the paper; it saves thousands of steps). The test images are
dequantized ``--test-draws`` times with a fixed generator; the report gives the
mean over images of the mean over draws of ``log p(y)`` in nats on [0, 1]^784
(the quantity in NICE's Table 2: 1980.50 on MNIST) and its bits/dim,
``-(log p(y) - 784 log 256) / (784 log 2)``, an upper bound on the discrete
negative log-likelihood (:func:`pyro_deepgen.models.bits_per_dim`).

Writes to ``--out``: ``results.json``, ``results.md``, ``samples.png``,
``inpainting.png`` (rows: images; columns: the inpainting progression, then the
original), the trained model (``model.json``, ``model.pt``) and ``fit``'s
checkpoint and history under ``train/``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import pyro
import torch
from pyro.infer import Trace_ELBO

from pyro_deepgen import plots
from pyro_deepgen.data import load_dataset
from pyro_deepgen.models import NICE, DequantizedDataset, bits_per_dim, dequantize, inpaint, save_model
from pyro_deepgen.train import fit

NICE_PAPER_NATS = 1980.50  # NICE, Table 2, MNIST (log-likelihood on [0, 1]^784)
SHAPE = (28, 28)


def masks(n: int, d: int = 784) -> torch.Tensor:
    """Missing pixels (True): cycling through the top half, the bottom half, the left
    half and the right half of the image."""
    grid = torch.zeros(4, *SHAPE, dtype=torch.bool)
    grid[0, :14], grid[1, 14:], grid[2, :, :14], grid[3, :, 14:] = True, True, True, True
    return grid.reshape(4, d)[torch.arange(n) % 4]


@torch.no_grad()
def mean_log_prob(flow: NICE, x: torch.Tensor, draws: int, seed: int, device,
                  batch: int = 500) -> torch.Tensor:
    """Per image, the mean over ``draws`` fixed dequantizations of ``log p(y)``."""
    gen = torch.Generator().manual_seed(seed)
    total = torch.zeros(len(x))
    for _ in range(draws):
        y = dequantize(x, generator=gen)
        total += torch.cat([flow.log_prob(y[i:i + batch].to(device)).cpu() for i in range(0, len(y), batch)])
    return total / draws


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default=None, help="folder that holds mnist/ (default: load_dataset's)")
    p.add_argument("--out", default="runs/nice_mnist")
    p.add_argument("--max-time", type=float, default=1800.0, help="seconds of training")
    p.add_argument("--epochs", type=int, default=1000, help="an upper bound; --max-time usually stops first")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--hidden", default="1000,1000,1000,1000,1000")
    p.add_argument("--num-couplings", type=int, default=4)
    p.add_argument("--prior", default="logistic")
    p.add_argument("--no-data-init", action="store_true",
                   help="keep the paper's initialization of the diagonal scaling (exp(s) = 1)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--test-size", type=int, default=1000)
    p.add_argument("--test-draws", type=int, default=4)
    p.add_argument("--inpaint-images", type=int, default=8)
    p.add_argument("--inpaint-steps", type=int, default=300)
    p.add_argument("--inpaint-lr", type=float, default=0.03)
    p.add_argument("--inpaint-noise", type=float, default=0.0)
    p.add_argument("--progress", action="store_true")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)

    x = load_dataset("mnist", split="test", root=args.data_root, binarize=None).tensors[0]
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(args.split_seed))
    x_test, x_train = x[perm[:args.test_size]], x[perm[args.test_size:]]

    config = {"x_dim": x.shape[1], "num_couplings": args.num_couplings,
              "hidden": [int(h) for h in args.hidden.split(",")], "prior": args.prior}
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    flow = NICE(**config)
    if not args.no_data_init:
        flow.initialize_scale(dequantize(x_train, generator=torch.Generator().manual_seed(args.seed)))
    t0 = time.perf_counter()
    history = fit(flow.model, flow.guide, DequantizedDataset(x_train), Trace_ELBO(),
                  epochs=args.epochs, batch_size=args.batch_size,
                  optim=pyro.optim.Adam({"lr": args.lr, "eps": 1e-4}), seed=args.seed,
                  out=out / "train", max_time=args.max_time, device=device, progress=args.progress)
    train_seconds = time.perf_counter() - t0
    save_model(flow, "nice", config, out)

    d = x.shape[1]
    test_lp = mean_log_prob(flow, x_test, args.test_draws, args.seed + 1, device)
    train_lp = mean_log_prob(flow, x_train[:len(x_test)], args.test_draws, args.seed + 2, device)
    test_nats = test_lp.mean().item()

    pyro.set_rng_seed(args.seed)
    with torch.no_grad():
        samples = flow.sample(64).cpu().clamp(0, 1)
    plots.save_figure(plots.image_grid(samples, SHAPE, nrow=8, title="NICE samples"), out / "samples.png")

    k = args.inpaint_images
    y = dequantize(x_test[:k], generator=torch.Generator().manual_seed(args.seed + 3)).to(device)
    m = masks(k, d).to(device)
    at = sorted({0, args.inpaint_steps} | {s for s in (5, 10, 20, 40, 80, 160) if s < args.inpaint_steps})
    result = inpaint(flow, y, m, steps=args.inpaint_steps, lr=args.inpaint_lr, noise=args.inpaint_noise,
                     snapshots=at)
    columns = [s.cpu() for _, s in result.snapshots] + [y.cpu()]
    grid = torch.stack(columns, 1).reshape(-1, d)
    title = "inpainting: steps " + ", ".join(str(s) for s, _ in result.snapshots) + ", original"
    plots.save_figure(plots.image_grid(grid, SHAPE, nrow=len(columns), title=title), out / "inpainting.png")

    results = {
        "data": f"MNIST test images, {len(x_train)} train / {len(x_test)} test "
                f"(split seed {args.split_seed})",
        "config": config, "data_init": not args.no_data_init, "batch_size": args.batch_size,
        "lr": args.lr, "device": str(device),
        "max_time": args.max_time, "train_seconds": train_seconds,
        "epochs": len([r for r in history if r["complete"]]), "steps": history[-1]["step"] if history else 0,
        "final_train_loss": history[-1]["train_loss"] if history else None,
        "test_draws": args.test_draws,
        "test_log_prob_nats": test_nats,
        "test_log_prob_stderr": (test_lp.std() / math.sqrt(len(test_lp))).item(),
        "test_bits_per_dim": bits_per_dim(test_nats, d),
        "train_log_prob_nats": train_lp.mean().item(),
        "train_bits_per_dim": bits_per_dim(train_lp.mean().item(), d),
        "nice_paper_log_prob_nats": NICE_PAPER_NATS,
        "nice_paper_bits_per_dim": bits_per_dim(NICE_PAPER_NATS, d),
        "inpainting": {"steps": args.inpaint_steps, "lr": args.inpaint_lr, "noise": args.inpaint_noise,
                       "log_prob_start": result.log_prob[0].mean().item(),
                       "log_prob_end": result.log_prob[-1].mean().item(),
                       "log_prob_original": flow.log_prob(y).mean().item()},
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    r = results
    (out / "results.md").write_text(
        f"# NICE on dequantized MNIST\n\n{r['data']}; {r['steps']} steps ({r['epochs']} complete epochs) in "
        f"{r['train_seconds']:.0f} s on {r['device']}.\n\n"
        "| | log p(y), nats on [0,1]^784 | bits/dim |\n|---|---|---|\n"
        f"| test ({len(x_test)} images, {r['test_draws']} dequantizations each) | "
        f"{r['test_log_prob_nats']:.1f} ± {r['test_log_prob_stderr']:.1f} | {r['test_bits_per_dim']:.3f} |\n"
        f"| train ({len(x_test)} images) | {r['train_log_prob_nats']:.1f} | {r['train_bits_per_dim']:.3f} |\n"
        f"| NICE paper (Table 2, 60000 train images) | {NICE_PAPER_NATS:.2f} | "
        f"{r['nice_paper_bits_per_dim']:.3f} |\n\n"
        "![samples](samples.png)\n\n![inpainting](inpainting.png)\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
