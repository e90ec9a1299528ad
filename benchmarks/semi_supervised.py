"""The acceptance figures of the semi-supervised and structured VAEs (issue 6).

    # 1. few-labels table: test error of M2, M1+M2 and the supervised-only baseline
    python benchmarks/semi_supervised.py table --labels 100,600,1000,3000 --seeds 0,1,2 \\
        --max-time 1800 --out runs/few_labels
    #    M2 with a weight 3 on the style latent's KL, 10 labelled rows per step and alpha 500
    python benchmarks/semi_supervised.py table --models m2 --beta 3 --labelled-batch-size 10 \\
        --alpha 500 --labels 100 --max-time 1740 --out runs/few_labels/m2-beta3-long
    #    and, for each M2 run, the error of q(y|x) and of the generative model
    python benchmarks/semi_supervised.py diagnose --out runs/few_labels --num-samples 10
    # 2. 2-layer DLGM against 1-layer, IWAE-5 training, equal budget
    python benchmarks/semi_supervised.py dlgm --max-time 1800 --out runs/dlgm
    # 3. CVAE quadrant completion against the NN regressor
    python benchmarks/semi_supervised.py cvae --max-time 600 --out runs/cvae

Data: ``--data-root`` (default ``$PYRO_DEEPGEN_DATA``, else ``../shared/data``), static binarized MNIST.

``table``: the protocol of :mod:`pyro_deepgen.data.labels` (unlabelled: the 50000
training images; labels drawn balanced with each seed from a fixed 5000-image half
of the labelled test split; test error on the other 5000). Each run is
:func:`pyro_deepgen.experiment.train_run` (what ``pyro-deepgen train --model m2
--labels N`` runs), stopped after ``--max-time`` seconds (M1+M2: that budget for
each of its two stages, M1 then M2; M1 sees no labels, so the first M1+M2 run
trains it, with seed ``--seeds[0]``, and the others reuse it: ``--pretrained``).
The supervised-only baseline is M2's classifier network (one hidden layer of 500
softplus units) trained by cross-entropy on the labels alone
(:class:`pyro_deepgen.models.SupervisedClassifier`).
Writes ``results.json`` and ``results.md`` (mean and std over the seeds).

``dlgm``: :class:`pyro_deepgen.models.DLGM` with one layer (``z_dims=(50,)``,
hidden 200-200) and two (``(100, 50)``, hidden 200-200 then 100-100; Burda et
al. 2016), both trained with IWAE-5 for ``--max-time`` seconds, then test
IWAE-``--num-samples`` log-likelihood on ``--limit`` test images and active
units per layer (:meth:`pyro_deepgen.models.DLGM.active_units`).

The test images of ``dlgm`` and ``cvae`` are ``--limit`` images in a fixed random
order (the stored test split is sorted by class).

``cvae``: for 1, 2 and 3 given quadrants, a :class:`pyro_deepgen.models.CVAE`
(hidden 500-500, z 50, relu; ``--max-time`` seconds of ELBO training) and a
:class:`pyro_deepgen.models.NNRegressor` (the same budget), then the conditional
NLL of the missing pixels on the test images (the CVAE's is IWAE-100) and a
figure of completions.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time
from pathlib import Path

import pyro
import torch
from pyro.infer import Trace_ELBO
from torch.utils.data import TensorDataset

from pyro_deepgen import plots
from pyro_deepgen.data import load_dataset, semi_supervised_data
from pyro_deepgen.evaluate import log_likelihood
from pyro_deepgen.experiment import RunConfig, train_run
from pyro_deepgen.infer import IWAE
from pyro_deepgen.models import (CVAE, DLGM, NNRegressor, SupervisedClassifier, classification_error,
                                 conditional_nll, load_model, merge_quadrants, quadrant_dataset)
from pyro_deepgen.train import fit

DATA = os.environ.get("PYRO_DEEPGEN_DATA") or str(Path(__file__).resolve().parents[2] / "shared" / "data")


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.2f}"
    return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f}"


def table(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    base = RunConfig(dataset="binarized_mnist", model="m2", labels=100, z_dim=50, hidden=(500,),
                     activation="softplus", alpha=args.alpha, beta=args.beta,
                     labelled_batch_size=args.labelled_batch_size, epochs=100000, batch_size=args.batch_size,
                     lr=args.lr, max_time=args.max_time, data_root=args.data_root, device=args.device)
    first_stage = None  # the first m1m2 run trains M1 (label-free); the others reuse it
    for n in args.labels:
        for seed in args.seeds:
            for model in args.models:
                t0 = time.perf_counter()
                if model == "supervised":
                    lab = semi_supervised_data("binarized_mnist", n, seed=seed, root=args.data_root)
                    clf = SupervisedClassifier(784, 10, hidden=(500,)).fit(
                        *lab.labelled.tensors, steps=args.supervised_steps, seed=seed)
                    error = float(classification_error(clf, *lab.heldout.tensors))
                    epochs = None
                else:
                    extra = {"m1_hidden": [600, 600]} if model == "m1m2" else {}
                    run = out / f"{model}-{n}-seed{seed}"
                    cfg = dataclasses.replace(base, model=model, labels=n, seed=seed, extra=extra,
                                              z_dims=(50, 50) if model == "m1m2" else None,
                                              pretrained=first_stage if model == "m1m2" else None)
                    history = train_run(cfg, run, progress=not args.quiet)
                    error, epochs = history[-1]["test_error"], history[-1]["epoch"]
                    if model == "m1m2" and first_stage is None:
                        first_stage = str(run)
                rows.append({"model": model, "labels": n, "seed": seed, "test_error": error,
                             "epochs": epochs, "seconds": time.perf_counter() - t0})
                print(json.dumps(rows[-1]), flush=True)
                (out / "results.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    lines = ["| model | " + " | ".join(f"{n} labels" for n in args.labels) + " |",
             "|---|" + "---|" * len(args.labels)]
    for model in args.models:
        cells = [_mean_std([r["test_error"] for r in rows if r["model"] == model and r["labels"] == n])
                 for n in args.labels]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    (out / "results.md").write_text(
        f"Test error (%) on the 5000 held-out images, mean ± std over seeds {args.seeds}; "
        f"at most {args.max_time:g} s of training per run (per stage for m1m2).\n\n" + "\n".join(lines) + "\n")
    print((out / "results.md").read_text())


def diagnose(args: argparse.Namespace) -> None:
    """For each M2 run of ``table`` in ``--out``: the held-out error of ``q(y|x)``
    and of the generative model (``argmax_y`` of the IWAE-``--num-samples``
    bound on ``log p(x|y)``, :meth:`pyro_deepgen.models.M2.generative_classify`)."""
    out = Path(args.out)
    rows = []
    for run in sorted(out.glob("m2-*-seed*")):
        cfg = json.loads((run / "run.json").read_text())
        module = load_model(run).to(args.device)
        x, y = semi_supervised_data("binarized_mnist", cfg["labels"], seed=cfg["seed"],
                                    root=args.data_root).heldout.tensors
        x, y = x.to(args.device), y.to(args.device)
        torch.manual_seed(args.seed)
        gen = torch.cat([module.generative_classify(x[i:i + 500], args.num_samples)
                         for i in range(0, len(x), 500)])
        rows.append({"run": run.name, "labels": cfg["labels"], "seed": cfg["seed"],
                     "classifier_error": float(classification_error(module, x, y)),
                     "generative_error": float((gen != y).float().mean())})
        print(json.dumps(rows[-1]), flush=True)
    (out / "diagnosis.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))


def _test_images(args: argparse.Namespace) -> torch.Tensor:
    """``--limit`` test images in a fixed random order (the stored test split is sorted by class)."""
    x = load_dataset("binarized_mnist", "test", root=args.data_root).tensors[0]
    return x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:args.limit]]


def dlgm(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train = load_dataset("binarized_mnist", "train", root=args.data_root)
    test = TensorDataset(_test_images(args))
    results = []
    for name, z_dims, hidden in [("1-layer", (50,), ((200, 200),)),
                                 ("2-layer", (100, 50), ((200, 200), (100, 100)))]:
        pyro.clear_param_store()
        pyro.set_rng_seed(args.seed)
        model = DLGM(784, z_dims=z_dims, hidden=hidden).to(args.device)
        history = fit(model.model, model.guide, train, IWAE(5), epochs=100000, batch_size=args.batch_size,
                      lr=args.lr, seed=args.seed, max_time=args.max_time, out=out / name,
                      device=args.device, progress=not args.quiet)
        ll = log_likelihood(model.model, model.guide, test, num_samples=args.num_samples, device=args.device)
        units = model.active_units(test.tensors[0].to(args.device))
        results.append({"model": name, "z_dims": z_dims, "epochs": len(history),
                        "test_log_likelihood": ll.mean().item(),
                        "stderr": ll.std().item() / len(ll) ** 0.5,
                        "active_units": {u.site: f"{u.num_active}/{u.variance.numel()}" for u in units}})
        print(json.dumps(results[-1]), flush=True)
    (out / "results.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=1))


def cvae(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train = load_dataset("binarized_mnist", "train", root=args.data_root).tensors[0]
    test = _test_images(args)
    results, panels = [], []
    for given in (1, 2, 3):
        pyro.clear_param_store()
        pyro.set_rng_seed(args.seed)
        ds = quadrant_dataset(train, given)
        x_t, c_t = quadrant_dataset(test, given).tensors
        model = CVAE(x_t.shape[1], c_t.shape[1], z_dim=50, hidden=(500, 500))
        fit(model.model, model.guide, ds, Trace_ELBO(), epochs=100000, batch_size=args.batch_size, lr=args.lr,
            seed=args.seed, max_time=args.max_time, pass_labels=True, progress=not args.quiet,
            out=out / f"cvae-{given}")
        nn_net = NNRegressor(x_t.shape[1], c_t.shape[1], hidden=(500, 500)).fit(
            *ds.tensors, steps=10**9, lr=args.lr, seed=args.seed, max_time=args.max_time)
        results.append({"given_quadrants": given,
                        "cvae_nll": conditional_nll(model, x_t, c_t, num_samples=100).mean().item(),
                        "nn_nll": nn_net.nll(x_t, c_t).mean().item()})
        print(json.dumps(results[-1]), flush=True)
        torch.manual_seed(args.seed)
        panels += [merge_quadrants(torch.full_like(x_t[:8], 0.5), c_t[:8], given),
                   merge_quadrants(torch.sigmoid(nn_net(c_t[:8])).detach(), c_t[:8], given),
                   *[merge_quadrants(model.generate(c_t[:8]), c_t[:8], given) for _ in range(2)],
                   test[:8]]
    (out / "results.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    plots.save_figure(plots.image_grid(torch.cat(panels), (28, 28), nrow=8,
                                       title="given / NN / CVAE x2 / truth, for 1, 2, 3 quadrants"),
                      out / "completions.png")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("figure", choices=("table", "diagnose", "dlgm", "cvae"))
    p.add_argument("--out", default="runs/issue6")
    p.add_argument("--data-root", default=DATA)
    p.add_argument("--max-time", type=float, default=1800.0, help="seconds of training per run")
    p.add_argument("--labels", type=lambda s: [int(t) for t in s.split(",")], default=[100, 600, 1000, 3000])
    p.add_argument("--seeds", type=lambda s: [int(t) for t in s.split(",")], default=[0, 1, 2])
    p.add_argument("--models", type=lambda s: s.split(","), default=["m2", "m1m2", "supervised"])
    p.add_argument("--alpha", type=float, default=50.0)
    p.add_argument("--beta", type=float, default=1.0, help="table: factor on M2's style-latent KL")
    p.add_argument("--labelled-batch-size", type=int, default=None,
                   help="table: labelled rows per step (default min(batch size, labels))")
    p.add_argument("--supervised-steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-samples", type=int, default=1000,
                   help="dlgm: k of the test IWAE-k; diagnose: k of the bound on log p(x|y)")
    p.add_argument("--limit", type=int, default=10000, help="dlgm, cvae: test images used")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args()
    {"table": table, "diagnose": diagnose, "dlgm": dlgm, "cvae": cvae}[args.figure](args)


if __name__ == "__main__":
    main()
