"""Comparing runs: training several configurations on one budget and writing
their table, curves and samples."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import statistics
from pathlib import Path
from typing import Any, Sequence

import torch

from pyro_deepgen import plots
from pyro_deepgen.runs.config import RunConfig
from pyro_deepgen.runs.evaluate import EVALUATION, evaluate_run, sample_run
from pyro_deepgen.runs.train import train_run

__all__ = ["compare", "compare_runs", "results_markdown", "write_report"]

logger = logging.getLogger(__name__)


def compare(objectives: Sequence[str], out: str | os.PathLike, base: RunConfig | None = None,
            num_samples: int = 1000, progress: bool = True,
            flows: Sequence[str | None] = (None,)) -> list[dict[str, Any]]:
    """Trains ``base`` once per objective and flow guide (``None``: the
    diagonal guide) on the same budget and seed; see :func:`compare_runs`."""
    base = base or RunConfig()
    objectives, flows = list(objectives), list(flows) or [None]
    if not objectives:
        raise ValueError("compare needs at least one objective")
    configs = [dataclasses.replace(base, objective=o, flow=f) for o in objectives for f in flows]
    return compare_runs(configs, out, num_samples=num_samples, progress=progress)


def compare_runs(configs: Sequence[RunConfig], out: str | os.PathLike, num_samples: int = 1000,
                 progress: bool = True, limit: int | None = None,
                 compile: str | None = None) -> list[dict[str, Any]]:
    """Trains each configuration into ``out/<name>`` (see :attr:`RunConfig.name`),
    evaluates each on the test split (IWAE-``num_samples``, ELBO and the collapse
    diagnostics; on ``limit`` of them if given, see :func:`evaluation_subset`; compiled
    as :func:`evaluate_run`'s ``compile`` says), and writes
    ``results.json``, ``results.md``, ``curves.png``, ``kl_units.png`` and
    ``samples_<name>.png`` into ``out``."""
    configs = list(configs)
    if not configs:
        raise ValueError("compare needs at least one run")
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise ValueError(f"compare got the same run twice: {names}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for cfg in configs:
        train_run(cfg, out / cfg.name, progress=progress)
        evaluate_run(out / cfg.name, num_samples=num_samples, seed=cfg.seed, limit=limit, compile=compile)
        sample_run(out / cfg.name, out / f"samples_{cfg.name}.png", seed=cfg.seed)
    return write_report(configs, out)


def write_report(configs: Sequence[RunConfig], out: str | os.PathLike) -> list[dict[str, Any]]:
    """Writes :func:`compare_runs`' report from the trained and evaluated run
    folders ``out/<name>`` (``history.json`` and ``evaluation.json``); returns its rows."""
    out = Path(out)
    rows, histories, kls = [], {}, {}
    num_samples = None
    for cfg in configs:
        name = cfg.name
        history = json.loads((out / name / "history.json").read_text())
        ev = json.loads((out / name / EVALUATION).read_text())
        num_samples = ev["num_samples"]
        histories[name] = history
        epochs = [r for r in history if r.get("complete", True)]
        rows.append({
            "run": name, "objective": cfg.objective, "test_log_likelihood": ev["log_likelihood"],
            "test_log_likelihood_stderr": ev["log_likelihood_stderr"], "test_elbo": ev["elbo"],
            **{k: ev[k] for k in ("kl", "active_units", "latent_dim", "mutual_information",
                                  "bits_per_dim") if k in ev},
            "epochs": len(epochs),
            "seconds_per_epoch": statistics.median(r["seconds"] for r in epochs) if epochs else float("nan"),
        })
        if "kl_per_unit" in ev:
            kls[name] = torch.tensor([v for unit in ev["kl_per_unit"].values() for v in unit])
        logger.info("%s: %s", name, rows[-1])
    base = configs[0]
    plots.save_figure(plots.training_curves(histories, title=f"{base.model} on {base.dataset}"),
                      out / "curves.png")
    if kls:
        plots.save_figure(plots.kl_per_unit(kls, title="KL per latent unit (test set)"),
                          out / "kl_units.png")
    meta = {"configs": [c.to_dict() for c in configs], "num_samples": num_samples,
            "torch_threads": torch.get_num_threads()}
    (out / "results.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    (out / "results.md").write_text(results_markdown(rows, configs, num_samples, kl_figure=bool(kls)))
    return rows


def _fmt(r: dict, key: str, spec: str) -> str:
    return format(r[key], spec) if r.get(key) is not None else "–"


def results_markdown(rows: Sequence[dict], configs: Sequence[RunConfig], num_samples: int,
                     kl_figure: bool = False) -> str:
    """The ``results.md`` table of :func:`compare_runs`."""
    base = configs[0]
    varying = sorted(k for k, v in base.to_dict().items() if any(c.to_dict()[k] != v for c in configs))
    lines = [
        f"# {base.model} on {base.dataset}: runs compared",
        "",
        f"Same model ({', '.join(f'{k}={v}' for k, v in base.model_options().items())}), seed {base.seed}, "
        f"{base.epochs} epochs of batch {base.batch_size}"
        + (f", at most {base.max_time:g} s each" if base.max_time else "") + "; "
        f"runs differ in {', '.join(varying) or 'nothing'}. "
        f"Test log-likelihood is IWAE-{num_samples} (nats per datapoint, ± standard error); "
        "KL is the test set's mean KL(q(z|x) || p(z)) summed over latent units, MI the mutual "
        "information I(x; z) under q.",
        "",
        "| run | test log p(x) | test ELBO | KL | active units | MI | epochs | s/epoch |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        units = f"{r['active_units']}/{r['latent_dim']}" if "active_units" in r else "–"
        lines.append(
            f"| {r['run']} | {r['test_log_likelihood']:.2f} ± {r['test_log_likelihood_stderr']:.2f} "
            f"| {r['test_elbo']:.2f} | {_fmt(r, 'kl', '.2f')} | {units} "
            f"| {_fmt(r, 'mutual_information', '.2f')} | {r['epochs']} | {r['seconds_per_epoch']:.3f} |")
    lines += ["", "s/epoch is the median over complete epochs (the first one includes warm-up).", "",
              "![training curves](curves.png)", ""]
    if kl_figure:
        lines += ["![KL per unit](kl_units.png)", ""]
    lines += [f"![{r['run']} samples](samples_{r['run']}.png)" for r in rows]
    return "\n".join(lines) + "\n"
