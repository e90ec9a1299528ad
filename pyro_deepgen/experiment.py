"""Runs: train one configuration to a folder, evaluate a folder, compare objectives.

These glue the data sets, the model registry, the objective registry,
:func:`pyro_deepgen.train.fit` and :mod:`pyro_deepgen.evaluate` together; the
CLI, tutorials and benchmarks call them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pyro
import torch
from torch.utils.data import TensorDataset

from pyro_deepgen import plots
from pyro_deepgen.data import DATASETS, LabelledData, image_shape, load_dataset, semi_supervised_data
from pyro_deepgen.distributed import BACKENDS, init_distributed, rank
from pyro_deepgen.diagnostics import kl_per_unit, mutual_information
from pyro_deepgen.evaluate import active_units, ais_log_likelihood, elbo, log_likelihood
from pyro_deepgen.infer import KLSchedule, make_objective
from pyro_deepgen.models import (MODELS, DequantizedDataset, EnumELBO, bits_per_dim, build_model,
                                 classification_error, dequantize, load_model, model_options, model_spec,
                                 save_model)
from pyro_deepgen.train import CHECKPOINT, fit, load_checkpoint

__all__ = [
    "BINARIZE",
    "RunConfig",
    "compare",
    "compare_runs",
    "evaluation_subset",
    "write_report",
    "dataset_for",
    "evaluate_run",
    "load_first_stage",
    "load_run_config",
    "results_markdown",
    "sample_run",
    "train_run",
]

logger = logging.getLogger(__name__)

RUN = "run.json"
LABELS = "labels.json"
EVALUATION = "evaluation.json"
EVALUATION_METHODS = ("iwae", "ais")
BINARIZE = ("auto", "dynamic", "static", "none")
# fields that may change when a run is resumed: where data comes from, and where it runs
_NOT_RESULTS = {"data_root", "download", "device", "backend", "check_sync_every", "compile"}
COMPILE = ("none", "fx", "inductor")


@dataclass
class RunConfig:
    """Everything that defines a training run; saved as ``run.json``."""

    dataset: str = "digits"
    model: str = "vae"
    objective: str = "elbo"
    z_dim: int = 50
    hidden: tuple[int, ...] = (200, 200)
    activation: str = "tanh"
    likelihood: str = "bernoulli"
    flow: str | None = None
    num_flows: int = 4
    binarize: str = "auto"
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    device: str = "cpu"
    max_time: float | None = None
    patience: int | None = None
    checkpoint_every: int | None = None
    data_root: str | None = None
    download: bool = False
    beta: float = 1.0
    kl_warmup: int = 0
    free_bits: float = 0.0
    hvi: int = 0
    hvi_leapfrog: int = 5
    #: stochastic layer sizes, next to x first (dlgm; m1m2: M1's latent, M2's latent)
    z_dims: tuple[int, ...] | None = None
    #: semi-supervised models (m2, m1, m1m2): how many labels to draw (balanced, with ``seed``)
    labels: int | None = None
    #: labelled rows in each batch besides ``batch_size`` unlabelled ones (default min(batch_size, labels))
    labelled_batch_size: int | None = None
    #: weight of the classification term on labelled data (m2, m1m2)
    alpha: float = 50.0
    #: m1m2: the folder of an earlier m1m2 run whose first stage (M1, in its ``pretrain`` folder)
    #: is reused instead of trained; M1 sees no labels, so runs that differ in labels can share it
    pretrained: str | None = None
    #: data-parallel training under torchrun: "auto" | "gloo" | "nccl"
    backend: str = "auto"
    #: data-parallel debugging: compare parameter checksums across processes every N steps
    check_sync_every: int | None = None
    #: run the objective as a compiled static program: "none" | "fx" | "inductor"
    compile: str = "none"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.hidden = tuple(int(h) for h in self.hidden)
        if self.binarize not in BINARIZE:
            raise ValueError(f"unknown binarize {self.binarize!r}; valid: {', '.join(BINARIZE)}")
        if self.flow in ("none", ""):
            self.flow = None
        make_objective(self.objective, self.kl_schedule())  # fail early on a bad name or schedule
        options = model_options(self.model)
        if self.flow is not None and "flow" not in options:
            raise ValueError(f"model {self.model!r} takes no flow guide; flows: --model vae")
        if self.flow is not None:
            from pyro_deepgen.guides import FLOWS
            if self.flow not in FLOWS:
                raise ValueError(f"unknown flow {self.flow!r}; valid: none, {', '.join(FLOWS)}")
        if self.hvi and "hvi" not in options:
            raise ValueError(f"model {self.model!r} takes no Hamiltonian guide; HVI: --model vae")
        if self.hvi < 0 or self.hvi_leapfrog < 1:
            raise ValueError(f"hvi must be >= 0 and hvi_leapfrog >= 1; got {self.hvi}, {self.hvi_leapfrog}")
        if self.compile not in COMPILE:
            raise ValueError(f"unknown compile {self.compile!r}; valid: {', '.join(COMPILE)}")
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; valid: {', '.join(BACKENDS)}")
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; valid: {', '.join(sorted(DATASETS))}")
        self._check_structured(options)

    def _check_structured(self, options: tuple[str, ...]) -> None:
        """Stochastic layers (``z_dims``) and labels (``labels``, ``alpha``)."""
        if self.z_dims is not None:
            self.z_dims = tuple(int(z) for z in self.z_dims)
            if "z_dims" not in options:
                raise ValueError(f"model {self.model!r} takes no z_dims; stochastic layers: "
                                 "--model dlgm | m1m2")
            if not self.z_dims or min(self.z_dims) < 1:
                raise ValueError(f"z_dims must be sizes >= 1; got {self.z_dims}")
        uses = model_spec(self.model).labels
        semi = ", ".join(n for n in MODELS if model_spec(n).labels)
        if self.labels is not None and uses is None:
            raise ValueError(f"model {self.model!r} takes no labels; semi-supervised: --model {semi}")
        if uses is not None and (self.labels is None or self.labels < 1):
            raise ValueError(f"model {self.model!r} is semi-supervised: it needs --labels N (N >= 1); "
                             f"got {self.labels}")
        if self.labelled_batch_size is not None and (uses != "batches" or self.labelled_batch_size < 1):
            raise ValueError(f"labelled_batch_size must be >= 1 and needs a model trained on labelled "
                             f"batches; got {self.labelled_batch_size} for model {self.model!r}")
        if uses == "batches" and (self.objective != "elbo" or self.kl_warmup or self.free_bits):
            raise ValueError(f"model {self.model!r} sums over its labels exactly (TraceEnum_ELBO): it "
                             f"trains with --objective elbo, with no KL warm-up or free bits (beta "
                             f"weights its style latent's KL); got {self.name!r}")
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0; got {self.alpha}")
        if self.pretrained is not None and self.model != "m1m2":
            raise ValueError(f"pretrained reuses the first stage of an m1m2 run; model {self.model!r} "
                             "has none")

    def kl_schedule(self) -> KLSchedule | None:
        """The KL schedule of ``beta``, ``kl_warmup`` and ``free_bits`` (``None`` if plain)."""
        s = KLSchedule(beta=self.beta, warmup=self.kl_warmup, free_bits=self.free_bits)
        return None if s.is_identity else s

    @property
    def name(self) -> str:
        """The objective, with the flow guide and KL schedule when there are any."""
        parts = [self.objective]
        if self.flow:
            parts.append(f"{self.flow}-{self.num_flows}")
        if self.hvi:
            parts.append(f"hvi-{self.hvi}x{self.hvi_leapfrog}")
        if self.beta != 1:
            parts.append(f"beta-{self.beta:g}")
        if self.kl_warmup:
            parts.append(f"warmup-{self.kl_warmup}")
        if self.free_bits:
            parts.append(f"freebits-{self.free_bits:g}")
        return "+".join(parts)

    def model_options(self) -> dict[str, Any]:
        """The run options that the model takes (tuples as lists, as in JSON)."""
        opts = {o: list(v) if isinstance(v, tuple) else v
                for o in model_options(self.model) for v in [getattr(self, o)]}
        if opts.get("flow", 0) is None:  # the diagonal guide: as before flows existed
            del opts["flow"], opts["num_flows"]
        if opts.get("hvi", 1) == 0:  # no Hamiltonian transitions: as before HVI existed
            del opts["hvi"], opts["hvi_leapfrog"]
        if opts.get("z_dims", 0) is None:  # the model's default layers
            del opts["z_dims"]
        return opts

    def model_config(self, x_dim: int) -> dict[str, Any]:
        """Keyword arguments of the model's constructor."""
        return {"x_dim": x_dim, **self.model_options(), **self.extra}


def _binarize_for(cfg: RunConfig, split: str) -> str | None:
    """``auto``: binary data as stored; grey data with a Bernoulli likelihood is
    binarized afresh each epoch for training and once, with a fixed seed, for
    validation and test."""
    if cfg.binarize == "none" or model_spec(cfg.model).dequantize:
        return None
    if cfg.binarize != "auto":
        return cfg.binarize
    if cfg.likelihood != "bernoulli" or cfg.dataset == "binarized_mnist":
        return None
    return "dynamic" if split == "train" else "static"


def dataset_for(cfg: RunConfig, split: str) -> TensorDataset:
    """The split of ``cfg.dataset``, binarized as ``cfg`` says; for a density
    model (NICE, RealNVP) dequantized instead, afresh each epoch for training
    and once, with a fixed seed, for validation and test."""
    data = load_dataset(cfg.dataset, split=split, root=cfg.data_root, download=cfg.download,
                        binarize=_binarize_for(cfg, split), seed=cfg.seed)
    if not model_spec(cfg.model).dequantize:
        return data
    x, *rest = data.tensors
    if split == "train":
        return DequantizedDataset(x, *rest)
    return TensorDataset(dequantize(x, generator=torch.Generator().manual_seed(cfg.seed)), *rest)


def load_run_config(directory: str | os.PathLike) -> RunConfig:
    """The :class:`RunConfig` saved in a run folder's ``run.json``."""
    path = Path(directory) / RUN
    if not path.exists():
        raise FileNotFoundError(f"{directory} is not a training run: {path} is missing")
    return RunConfig(**json.loads(path.read_text()))


def train_run(cfg: RunConfig, out: str | os.PathLike, progress: bool = True) -> list[dict]:
    """Trains ``cfg`` into the folder ``out`` (resuming a run already there).
    Under ``torchrun``, trains data-parallel; only rank 0 writes to ``out``."""
    init_distributed(cfg.device, cfg.backend)
    writer = rank() == 0
    out = Path(out)
    run_path = out / RUN
    if run_path.exists():
        old, new = dataclasses.asdict(load_run_config(out)), dataclasses.asdict(cfg)
        changed = sorted(k for k in new if k not in _NOT_RESULTS and old[k] != new[k])
        if changed:
            raise ValueError(f"{out} holds a different run ({run_path} differs in "
                             f"{', '.join(changed)}); use another --out")
    train = dataset_for(cfg, "train")
    val = dataset_for(cfg, "valid") if "valid" in DATASETS[cfg.dataset].splits else None
    if writer:
        out.mkdir(parents=True, exist_ok=True)
        run_path.write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
    pyro.clear_param_store()
    pyro.set_rng_seed(cfg.seed)
    x_dim = train.tensors[0].shape[1]
    config = cfg.model_config(x_dim)
    uses = model_spec(cfg.model).labels
    lab = None
    if uses is not None:  # semi-supervised: draw the labels (see pyro_deepgen.data.labels)
        lab = semi_supervised_data(cfg.dataset, cfg.labels, seed=cfg.seed, root=cfg.data_root,
                                   download=cfg.download, binarize=_binarize_for(cfg, "test"))
        if uses == "batches":
            config["y_dim"] = lab.num_classes
        if writer:
            (out / LABELS).write_text(json.dumps({"protocol": lab.protocol, "num_classes": lab.num_classes,
                                                  "pool_indices": lab.indices.tolist()}))
    module = build_model(cfg.model, **config)
    if hasattr(module, "initialize_scale") and not (out / CHECKPOINT).exists():
        module.initialize_scale(train.tensors[0][:1000])
    options = dict(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed,
                   val_dataset=val, patience=cfg.patience, device=cfg.device, max_time=cfg.max_time,
                   checkpoint_every=cfg.checkpoint_every, progress=progress, backend=cfg.backend,
                   check_sync_every=cfg.check_sync_every,
                   compile=False if cfg.compile == "none" else cfg.compile)
    pretrain = getattr(module, "pretrain", None)
    if isinstance(pretrain, torch.nn.Module):  # a first stage (M1 of M1+M2), in its own folder
        if cfg.pretrained is not None:
            load_first_stage(pretrain, cfg.pretrained)
        else:
            fit(pretrain.model, pretrain.guide, train, make_objective("elbo"), out=out / "pretrain",
                **options)
    if uses == "batches":
        loss = EnumELBO(kl_weights={module.style_site: cfg.beta})
        options.update(labelled=lab.labelled, labelled_batch_size=cfg.labelled_batch_size)
    else:
        loss = make_objective(cfg.objective, cfg.kl_schedule())
    if lab is not None:
        options["callbacks"] = [_test_error(module, lab, cfg.device, cfg.seed)]
    history = fit(module.model, module.guide, train, loss, out=out, **options)
    if writer:
        save_model(module.cpu(), cfg.model, config, out)
    return history


def load_first_stage(pretrain: torch.nn.Module, run: str | os.PathLike) -> None:
    """Loads the first stage (M1 of M1+M2) that the m1m2 run in folder ``run``
    trained (its ``pretrain/checkpoint.pt``) into ``pretrain``, an :class:`~pyro_deepgen.models.M1`.

    :raises FileNotFoundError: when ``run`` has no trained first stage.
    :raises ValueError: when its networks differ from ``pretrain``'s.
    """
    path = Path(run) / "pretrain" / CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: --pretrained must be the folder of an m1m2 run "
                                "whose first stage has trained")
    params = load_checkpoint(path)["params"]
    vae = pretrain.vae
    for part in ("encoder", "decoder"):
        prefix = f"{vae.name}.{part}$$$"
        state = {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}
        try:
            getattr(vae, part).load_state_dict(state)
        except RuntimeError as e:
            raise ValueError(f"{path} holds a different M1 {part} than this run builds (compare "
                             f"z_dims and m1_hidden with {Path(run) / 'run.json'}): {e}") from None


def _test_error(module: torch.nn.Module, lab: LabelledData, device: str, seed: int):
    """A ``fit`` callback that adds the held-out ``test_error`` of ``module.classify``
    to each epoch's record (fitting ``module.fit_classifier`` on the labels first, for M1)."""
    (x, y), (lx, ly) = lab.heldout.tensors, lab.labelled.tensors

    def record(r: dict) -> None:
        if hasattr(module, "fit_classifier"):
            module.fit_classifier(lx.to(device), ly.to(device), seed=seed)
        r["test_error"] = float(classification_error(module, x.to(device), y.to(device)))

    return record


def evaluation_subset(data: TensorDataset, limit: int) -> TensorDataset:
    """``limit`` datapoints of ``data`` drawn at random with a fixed seed, in their
    original order: the same subset for every run, and a fair sample of splits that
    are sorted (the binarized MNIST test split is ordered by label)."""
    n = len(data)
    if limit < 1:
        raise ValueError(f"limit must be >= 1; got {limit}")
    if limit >= n:
        return data
    keep = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:limit].sort().values
    return TensorDataset(*(t[keep] for t in data.tensors))


def evaluate_run(directory: str | os.PathLike, num_samples: int = 5000, split: str = "test",
                 batch_size: int = 100, device: str | None = None, limit: int | None = None,
                 seed: int = 0, method: str = "iwae", ais_steps: int = 500, ais_leapfrog: int = 5,
                 ais_chains: int = 16, ais_step_size: float = 0.1,
                 ais_from_guide: bool = False, compile: str | None = None) -> dict[str, Any]:
    """IWAE-``num_samples`` log-likelihood, ELBO and active units of a trained
    run on ``split``; writes ``evaluation.json`` and ``log_likelihood.pt``
    (per datapoint) into the run folder and returns the summary.

    ``method="ais"`` estimates the log-likelihood by annealed importance sampling
    instead (:func:`pyro_deepgen.evaluate.ais_log_likelihood`: ``ais_steps``
    annealing steps, ``ais_chains`` chains per datapoint, HMC with ``ais_leapfrog``
    leapfrog steps and an adapted step size that starts at ``ais_step_size``,
    from the prior or, with ``ais_from_guide``, from q(z|x)), adds ``method``, the
    AIS settings, ``ais_stderr`` (the Monte Carlo standard error of the mean) and
    ``ais_accept_rate``, and writes
    ``evaluation_ais.json`` and ``log_likelihood_ais.pt``, so that the IWAE
    evaluation stays.

    ``compile`` (``"none"``, ``"fx"``, ``"inductor"``; default: the run's
    setting) runs the IWAE chunks as a compiled static program."""
    if method not in EVALUATION_METHODS:
        raise ValueError(f"unknown evaluation method {method!r}; valid: {', '.join(EVALUATION_METHODS)}")
    if compile is not None and compile not in COMPILE:
        raise ValueError(f"unknown compile {compile!r}; valid: {', '.join(COMPILE)}")
    directory = Path(directory)
    cfg = load_run_config(directory)
    compile = cfg.compile if compile is None else compile
    device = device or cfg.device
    module = load_model(directory).to(device)
    data = dataset_for(cfg, split)
    if limit is not None:
        data = evaluation_subset(data, limit)
    # a fresh parameter store: after training in this process the store holds that module's
    # tensors under the same names, and pyro.module would not register the loaded ones
    with pyro.get_param_store().scope():
        pyro.set_rng_seed(seed)
        t0 = time.perf_counter()
        if method == "ais":
            ais = ais_log_likelihood(module.model, module.guide if ais_from_guide else None, data,
                                     num_steps=ais_steps, num_leapfrog=ais_leapfrog, step_size=ais_step_size,
                                     num_chains=ais_chains, batch_size=batch_size, device=device)
            ll = ais.log_likelihood
        else:
            ll = log_likelihood(module.model, module.guide, data, num_samples=num_samples,
                                batch_size=batch_size, device=device,
                                compiled=False if compile == "none" else compile)
        seconds = time.perf_counter() - t0
        el = elbo(module.model, module.guide, data, device=device)
        n = ll.numel()
        result = {
            "split": split, "num_datapoints": n, "num_samples": num_samples,
            "log_likelihood": ll.mean().item(),
            "log_likelihood_stderr": (ll.std().item() / math.sqrt(n)) if n > 1 else float("nan"),
            "elbo": el.mean().item(), "seconds": seconds,
        }
        if method == "ais":
            result.update({
                "method": "ais", "ais_steps": ais_steps, "ais_leapfrog": ais_leapfrog, "ais_chains": ais_chains,
                "ais_step_size": ais_step_size, "ais_from_guide": ais_from_guide,
                "ais_stderr": ais.stderr.pow(2).sum().sqrt().item() / n,
                "ais_accept_rate": ais.accept_rate.mean().item()})
        if model_spec(cfg.model).dequantize:
            result["bits_per_dim"] = float(bits_per_dim(result["log_likelihood"], data.tensors[0].shape[1]))
        kls = kl_per_unit(module.model, module.guide, data, device=device)
        if kls:  # latent variables: collapse diagnostics
            result["kl_per_unit"] = {k: v.tolist() for k, v in kls.items()}
            result["kl"] = sum(v.sum().item() for v in kls.values())
            result["active_units_per_site"], result["latent_dim"] = {}, 0
            if hasattr(module, "active_units"):  # per layer, the layer below's noise averaged out (DLGM)
                per_site = [(au.site, au.num_active, au.variance) for au in module.active_units(data)]
            else:
                per_site = [(site, au.num_active, au.variance) for site in kls
                            for au in [active_units(module.guide, data, site=site, device=device)]]
            for site, num_active, variance in per_site:
                result["active_units_per_site"][site] = num_active
                result["latent_dim"] += variance.numel()
            result["active_units"] = sum(result["active_units_per_site"].values())
            try:
                result["mutual_information"] = mutual_information(module.guide, data, site=next(iter(kls)),
                                                                  device=device)
            except ValueError as e:  # e.g. a flow guide without an inverse
                logger.info("no mutual information: %s", e)
    suffix = "_ais" if method == "ais" else ""
    (directory / EVALUATION.replace(".json", f"{suffix}.json")).write_text(json.dumps(result, indent=2))
    torch.save(ll, directory / f"log_likelihood{suffix}.pt")
    return result


def sample_run(directory: str | os.PathLike, out: str | os.PathLike, n: int = 64,
               seed: int = 0) -> list[Path]:
    """Writes a grid of ``n`` samples to ``out``; for a 2-D latent space, also
    the latent manifold to ``<out stem>_manifold.png``. Returns the paths."""
    cfg = load_run_config(directory)
    module = load_model(directory)
    shape = image_shape(cfg.dataset)
    torch.manual_seed(seed)
    out = Path(out)
    plots.save_figure(plots.image_grid(module.sample(n), shape, title=f"{cfg.objective} samples"), out)
    paths = [out]
    if getattr(module, "z_dim", None) == 2:
        m = out.with_name(out.stem + "_manifold" + out.suffix)
        plots.save_figure(plots.latent_manifold(module.decode, shape, title="latent manifold"), m)
        paths.append(m)
    return paths


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
    meta = {"configs": [dataclasses.asdict(c) for c in configs], "num_samples": num_samples,
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
    varying = sorted(k for k in dataclasses.asdict(base)
                     if any(getattr(c, k) != getattr(base, k) for c in configs))
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
