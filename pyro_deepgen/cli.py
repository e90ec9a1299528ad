"""``pyro-deepgen train | evaluate | sample | compare``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

__all__ = ["main", "build_parser"]


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.split(",") if t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")


def _run_options(p: argparse.ArgumentParser, epochs: int) -> None:
    from pyro_deepgen.distributed import BACKENDS
    from pyro_deepgen.experiment import BINARIZE, COMPILE

    g = p.add_argument_group("run")
    g.add_argument("--dataset", default="digits", help="digits | binarized_mnist | mnist | frey")
    g.add_argument("--model", default="vae",
                   help="vae | sbn | categorical-vae | nice | realnvp | dlgm | m2 | m1 | m1m2")
    g.add_argument("--z-dim", type=int, default=50,
                   help="latent size (sbn: its one layer of Bernoulli latents; "
                        "categorical-vae: the number of 10-class one-hot variables)")
    g.add_argument("--hidden", type=_ints, default=(200, 200), help="e.g. 200,200")
    g.add_argument("--activation", default="tanh")
    g.add_argument("--likelihood", default="bernoulli", help="bernoulli | gaussian")
    g.add_argument("--flow", default=None,
                   help="flow guide: planar | radial | sylvester | iaf | coupling | householder "
                        "(vae; default: the diagonal Gaussian guide)")
    g.add_argument("--num-flows", type=int, default=4, help="transforms in the flow guide")
    g.add_argument("--hvi", type=int, default=0,
                   help="Hamiltonian transitions refining the guide (vae; Salimans et al. 2015)")
    g.add_argument("--hvi-leapfrog", type=int, default=5, help="leapfrog steps per transition")
    g.add_argument("--z-dims", type=_ints, default=None,
                   help="stochastic layer sizes, next to x first (dlgm: default 100,50; "
                        "m1m2: M1's latent,M2's latent, default 50,50)")
    g.add_argument("--labels", type=int, default=None,
                   help="semi-supervised models (m2, m1, m1m2): number of labels, drawn balanced "
                        "across classes with --seed; the test error is reported every epoch")
    g.add_argument("--labelled-batch-size", type=int, default=None,
                   help="labelled rows in each batch besides --batch-size unlabelled ones "
                        "(default: min(batch size, labels))")
    g.add_argument("--alpha", type=float, default=50.0,
                   help="weight of the classification term per labelled row (m2, m1m2)")
    g.add_argument("--pretrained", default=None,
                   help="m1m2: reuse the first stage (M1) of the m1m2 run in this folder instead of "
                        "training one")
    g.add_argument("--beta", type=float, default=1.0,
                   help="factor on the latent sites' KL (m2, m1m2: on the style latent z only)")
    g.add_argument("--kl-warmup", type=int, default=0,
                   help="steps over which the KL factor rises linearly from 0 to beta")
    g.add_argument("--free-bits", type=float, default=0.0,
                   help="nats per latent unit below which a unit's KL is held constant")
    g.add_argument("--binarize", default="auto", choices=BINARIZE)
    g.add_argument("--epochs", type=int, default=epochs)
    g.add_argument("--batch-size", type=int, default=128)
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    g.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="under torchrun: the process group's backend (auto: nccl on cuda, gloo on cpu)")
    g.add_argument("--compile", default="none", choices=COMPILE,
                   help="run the objective as a compiled static program (inductor: torch.compile; "
                        "models that are not static run the general path, with a log line)")
    g.add_argument("--check-sync-every", type=int, default=None,
                   help="under torchrun, debugging: check every N steps that the processes hold "
                        "identical parameters")
    g.add_argument("--max-time", type=float, default=None, help="training budget per run, seconds")
    g.add_argument("--patience", type=int, default=None, help="early stopping on the valid split")
    g.add_argument("--checkpoint-every", type=int, default=None, help="steps between checkpoints")
    g.add_argument("--data-root", default=None, help="overrides $PYRO_DEEPGEN_DATA")
    g.add_argument("--download", action="store_true", help="fetch missing data files")
    g.add_argument("--quiet", action="store_true", help="no progress bar")


def _config(args: argparse.Namespace, objective: str):
    from pyro_deepgen.experiment import RunConfig

    return RunConfig(
        dataset=args.dataset, model=args.model, objective=objective, z_dim=args.z_dim,
        hidden=args.hidden, activation=args.activation, likelihood=args.likelihood,
        flow=args.flow, num_flows=args.num_flows, hvi=args.hvi, hvi_leapfrog=args.hvi_leapfrog,
        beta=args.beta, kl_warmup=args.kl_warmup, free_bits=args.free_bits,
        z_dims=args.z_dims, labels=args.labels, labelled_batch_size=args.labelled_batch_size,
        alpha=args.alpha, pretrained=args.pretrained, binarize=args.binarize, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr,
        seed=args.seed, device=args.device, max_time=args.max_time, patience=args.patience,
        checkpoint_every=args.checkpoint_every, data_root=args.data_root, download=args.download,
        backend=args.backend, check_sync_every=args.check_sync_every, compile=args.compile)


def build_parser() -> argparse.ArgumentParser:
    """The ``pyro-deepgen`` argument parser, one sub-parser per command."""
    parser = argparse.ArgumentParser(prog="pyro-deepgen", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one model with one objective")
    p.add_argument("--objective", default="elbo")
    p.add_argument("--out", required=True, help="run folder (resumed if it holds this run)")
    _run_options(p, epochs=10)

    p = sub.add_parser("evaluate", help="test log-likelihood of a trained run")
    p.add_argument("run", help="run folder written by train")
    p.add_argument("--num-samples", type=int, default=5000)
    p.add_argument("--split", default="test")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--limit", type=int, default=None,
                   help="only N datapoints, a fixed random subset of the split")
    p.add_argument("--device", default=None)
    p.add_argument("--seed", type=int, default=0)
    from pyro_deepgen.experiment import COMPILE, EVALUATION_METHODS

    p.add_argument("--compile", default=None, choices=COMPILE,
                   help="IWAE chunks as a compiled static program (default: the run's --compile)")
    p.add_argument("--method", default="iwae", choices=EVALUATION_METHODS,
                   help="iwae: IWAE-k with k = --num-samples; ais: annealed importance sampling "
                        "(writes evaluation_ais.json)")
    g = p.add_argument_group("ais")
    g.add_argument("--ais-steps", type=int, default=500, help="annealing steps (temperatures - 1)")
    g.add_argument("--ais-leapfrog", type=int, default=5, help="leapfrog steps per HMC transition")
    g.add_argument("--ais-chains", type=int, default=16, help="chains per datapoint")
    g.add_argument("--ais-step-size", type=float, default=0.1, help="initial HMC step size (adapted)")
    g.add_argument("--ais-from-guide", action="store_true",
                   help="anneal from q(z|x) instead of the prior")

    p = sub.add_parser("sample", help="a grid of samples (and the latent manifold for z=2)")
    p.add_argument("run")
    p.add_argument("--out", default="samples.png")
    p.add_argument("-n", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("compare", help="train and evaluate one model per objective and guide")
    p.add_argument("--objectives", default="elbo,meanfield,iwae-5")
    p.add_argument("--flows", default=None,
                   help="guides side by side, e.g. none,planar,iaf (none: the diagonal guide); "
                        "default: --flow")
    p.add_argument("--out", default="runs/compare")
    p.add_argument("--num-samples", type=int, default=1000, help="k of the test IWAE-k")
    _run_options(p, epochs=100)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``pyro-deepgen``; returns the exit code (2 with a message on bad input)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from pyro_deepgen import distributed, experiment

    try:
        if args.command != "train" and distributed.launched_world_size() > 1:
            raise ValueError(f"{args.command} runs in one process; only train runs under torchrun "
                             "with several processes (WORLD_SIZE > 1)")
        if args.command == "train":
            history = experiment.train_run(_config(args, args.objective), args.out,
                                           progress=not args.quiet)
            if distributed.rank() == 0:
                print(json.dumps(history[-1] if history else {}, indent=1))
        elif args.command == "evaluate":
            result = experiment.evaluate_run(args.run, num_samples=args.num_samples, split=args.split,
                                             batch_size=args.batch_size, device=args.device,
                                             limit=args.limit, seed=args.seed, method=args.method,
                                             ais_steps=args.ais_steps, ais_leapfrog=args.ais_leapfrog,
                                             ais_chains=args.ais_chains, ais_step_size=args.ais_step_size,
                                             ais_from_guide=args.ais_from_guide, compile=args.compile)
            extra = (f"active units {result['active_units']}/{result['latent_dim']}, "
                     f"KL {result['kl']:.2f}" if "kl" in result else
                     f"{result['bits_per_dim']:.3f} bits/dim" if "bits_per_dim" in result else "")
            how = (f"AIS, {args.ais_steps} steps x {args.ais_chains} chains, Monte Carlo SE "
                   f"{result['ais_stderr']:.3f}" if args.method == "ais" else f"IWAE-{args.num_samples}")
            print(f"{args.split} log-likelihood ({how}): "
                  f"{result['log_likelihood']:.3f} ± {result['log_likelihood_stderr']:.3f} nats "
                  f"over {result['num_datapoints']} datapoints "
                  f"(ELBO {result['elbo']:.3f}, {extra}, {result['seconds']:.1f} s)")
        elif args.command == "sample":
            for path in experiment.sample_run(args.run, args.out, n=args.n, seed=args.seed):
                print(path)
        elif args.command == "compare":
            objectives = [o.strip() for o in args.objectives.split(",") if o.strip()]
            base = _config(args, objectives[0] if objectives else "elbo")
            flows = ([f.strip() for f in args.flows.split(",") if f.strip()] if args.flows
                     else [base.flow])
            experiment.compare(objectives, args.out, base=base, num_samples=args.num_samples,
                               progress=not args.quiet, flows=flows)
            print((Path(args.out) / "results.md").read_text())
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"pyro-deepgen {args.command}: error: {e}", file=sys.stderr)
        return 2
    finally:
        distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
