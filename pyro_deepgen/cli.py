"""``pyro-deepgen train | evaluate | sample | compare``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

__all__ = ["main", "build_parser"]


def _parser_of(annotation: str) -> Any:
    """The argparse type of a RunConfig field from its annotation (``int | None`` -> int)."""
    base = annotation.replace(" | None", "")
    return {"int": int, "float": float, "str": str}[base]


def _run_options(p: argparse.ArgumentParser, epochs: int) -> None:
    """One flag per :class:`~pyro_deepgen.runs.RunConfig` field and per run option of the
    registered models (:data:`~pyro_deepgen.models.RUN_OPTIONS`), with their help and choices."""
    from pyro_deepgen.models import MODELS, RUN_OPTIONS
    from pyro_deepgen.runs import RunConfig

    g = p.add_argument_group("run")
    for f in dataclasses.fields(RunConfig):
        meta = f.metadata
        if not meta.get("flag", True):
            continue
        flag = "--" + f.name.replace("_", "-")
        default = epochs if f.name == "epochs" else f.default
        if f.type == "bool":
            g.add_argument(flag, action="store_true", help=meta["help"])
        else:
            g.add_argument(flag, type=_parser_of(f.type), default=default, choices=meta.get("choices"),
                           help=meta["help"])
    g = p.add_argument_group("model options (each for the models that take it)")
    for name, option in RUN_OPTIONS.items():
        takers = ", ".join(m for m, spec in MODELS.items() if name in spec.options)
        g.add_argument("--" + name.replace("_", "-"), type=option.type, default=option.default,
                       help=f"{option.help} [{takers or 'models registered later'}]")
    g.add_argument("--quiet", action="store_true", help="no progress bar")


def _config(args: argparse.Namespace, objective: str):
    from pyro_deepgen.models import RUN_OPTIONS
    from pyro_deepgen.runs import RunConfig

    names = [f.name for f in dataclasses.fields(RunConfig) if f.metadata.get("flag", True)]
    return RunConfig(objective=objective, **{n: getattr(args, n) for n in names},
                     **{n: getattr(args, n) for n in RUN_OPTIONS})


def _import_user_model(argv: Sequence[str] | None) -> None:
    """Imports the module of ``--model package.module:factory`` before the flags are
    made, so that the run options it registers become flags too."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--model", default="")
    known, _ = pre.parse_known_args(argv)
    if ":" in known.model:
        from pyro_deepgen.models import resolve_model

        try:
            resolve_model(known.model)
        except ValueError:
            pass  # reported by RunConfig with the other checks


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
    from pyro_deepgen.runs import COMPILE, EVALUATION_METHODS

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
    _import_user_model(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from pyro_deepgen import distributed, runs as experiment

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
