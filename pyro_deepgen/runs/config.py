"""A training run's configuration, written once: :class:`RunConfig`.

Its fields are the options of every run (data, objective, schedule, budget,
devices); the options of models (``z_dim``, ``hidden``, a flow guide, labels...)
are the :data:`~pyro_deepgen.models.RUN_OPTIONS` that models declare when they
register. The command line's flags are generated from both, with their help and
choices (:func:`pyro_deepgen.cli.build_parser`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import TensorDataset

from pyro_deepgen.data import DATASETS, load_dataset
from pyro_deepgen.distributed import BACKENDS
from pyro_deepgen.infer import KLSchedule, make_objective
from pyro_deepgen.models import (DEFAULT_MODEL, MODELS, RUN_OPTIONS, DequantizedDataset, dequantize,
                                 model_options, model_spec, resolve_model)

__all__ = ["BINARIZE", "COMPILE", "RUN", "RunConfig", "binarization", "dataset_for", "load_run_config"]

RUN = "run.json"
BINARIZE = ("auto", "dynamic", "static", "none")
COMPILE = ("none", "fx", "inductor")


def _help(text: str, choices: tuple[str, ...] | None = None, flag: bool = True) -> dict[str, Any]:
    return {"help": text, "choices": choices, "flag": flag}


@dataclass(init=False)
class RunConfig:
    """Everything that defines a training run; saved as ``run.json``.

    Takes its fields and, as keyword arguments too, the run options of models
    (:data:`~pyro_deepgen.models.RUN_OPTIONS`), which are read as attributes
    (``cfg.z_dim``) and kept in :attr:`options` where they differ from their default.

    Example:
        >>> cfg = RunConfig(dataset="digits", z_dim=2, hidden=(32,))
        >>> cfg.z_dim, cfg.name, cfg.model_options()["hidden"]
        (2, 'elbo', [32])
    """

    dataset: str = field(default="digits", metadata=_help("the data set, one of: " + ", ".join(DATASETS)))
    model: str = field(default=DEFAULT_MODEL, metadata=_help(
        "the model, one of: " + ", ".join(MODELS) + "; or package.module:factory, a function that takes "
        "x_dim (and run options among its parameters) and returns a model/guide pair"))
    objective: str = field(default="elbo", metadata=_help("the objective (see pyro_deepgen.infer)", flag=False))
    binarize: str = field(default="auto", metadata=_help("how grey data become binary", BINARIZE))
    epochs: int = field(default=10, metadata=_help("passes over the training data"))
    batch_size: int = field(default=128, metadata=_help("rows per step (all processes together)"))
    lr: float = field(default=1e-3, metadata=_help("Adam's learning rate"))
    seed: int = field(default=0, metadata=_help("the random seed"))
    device: str = field(default="cpu", metadata=_help("cpu | cuda | cuda:N"))
    max_time: float | None = field(default=None, metadata=_help("training budget per run, seconds"))
    patience: int | None = field(default=None, metadata=_help("early stopping on the valid split"))
    checkpoint_every: int | None = field(default=None, metadata=_help("steps between checkpoints"))
    data_root: str | None = field(default=None, metadata=_help("overrides $PYRO_DEEPGEN_DATA"))
    download: bool = field(default=False, metadata=_help("fetch missing data files"))
    beta: float = field(default=1.0, metadata=_help(
        "factor on the latent sites' KL (semi-supervised models: on the style latent only)"))
    kl_warmup: int = field(default=0, metadata=_help(
        "steps over which the KL factor rises linearly from 0 to beta"))
    free_bits: float = field(default=0.0, metadata=_help(
        "nats per latent unit below which a unit's KL is held constant"))
    backend: str = field(default="auto", metadata=_help(
        "under torchrun: the process group's backend (auto: nccl on cuda, gloo on cpu)", BACKENDS))
    check_sync_every: int | None = field(default=None, metadata=_help(
        "under torchrun, debugging: check every N steps that the processes hold identical parameters"))
    compile: str = field(default="none", metadata=_help(
        "run the objective as a compiled static program (inductor: torch.compile; models that are not "
        "static run the general path, with a log line)", COMPILE))
    #: further constructor arguments of the model
    extra: dict[str, Any] = field(default_factory=dict, metadata=_help("", flag=False))
    #: the models' run options that differ from their defaults
    options: dict[str, Any] = field(default_factory=dict, metadata=_help("", flag=False))

    def __init__(self, **kwargs: Any):
        options = dict(kwargs.pop("options", None) or {})
        for f in dataclasses.fields(self):
            if f.name != "options":
                default = f.default_factory() if f.default is dataclasses.MISSING else f.default
                setattr(self, f.name, kwargs.pop(f.name, default))
        resolve_model(self.model)  # a user's model module registers its run options when imported
        unknown = sorted(k for k in kwargs if k not in RUN_OPTIONS)
        if unknown:
            raise TypeError(f"RunConfig got unknown options {unknown}; run options: "
                            f"{', '.join(f.name for f in dataclasses.fields(self))}, {', '.join(RUN_OPTIONS)}")
        options.update(kwargs)
        self.options = {k: RUN_OPTIONS[k].normalize(v) for k, v in options.items()
                        if RUN_OPTIONS[k].normalize(v) != RUN_OPTIONS[k].default}
        self._check()

    def __getattr__(self, name: str) -> Any:
        if name in RUN_OPTIONS and name != "options":
            return self.__dict__.get("options", {}).get(name, RUN_OPTIONS[name].default)
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def _check(self) -> None:
        if self.binarize not in BINARIZE:
            raise ValueError(f"unknown binarize {self.binarize!r}; valid: {', '.join(BINARIZE)}")
        make_objective(self.objective, self.kl_schedule())  # fail early on a bad name or schedule
        spec, takes = model_spec(self.model), model_options(self.model)
        for name, value in self.options.items():
            option = RUN_OPTIONS[name]
            if name not in takes and (option.strict or option.misuse):
                models = ", ".join(m for m, s in MODELS.items() if name in s.options)
                if option.misuse:
                    raise ValueError(option.misuse.format(model=self.model, value=value, models=models))
                raise ValueError(f"model {self.model!r} takes no {option.noun or name}; "
                                 f"{option.kind or 'models that do'}: --model {models}")
            if option.check is not None:
                option.check(value)
        if self.compile not in COMPILE:
            raise ValueError(f"unknown compile {self.compile!r}; valid: {', '.join(COMPILE)}")
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; valid: {', '.join(BACKENDS)}")
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; valid: {', '.join(sorted(DATASETS))}")
        if spec.check is not None:
            spec.check(self)

    def kl_schedule(self) -> KLSchedule | None:
        """The KL schedule of ``beta``, ``kl_warmup`` and ``free_bits`` (``None`` if plain)."""
        s = KLSchedule(beta=self.beta, warmup=self.kl_warmup, free_bits=self.free_bits)
        return None if s.is_identity else s

    def option_values(self) -> dict[str, Any]:
        """Every run option of the models, with its value for this run."""
        return {name: getattr(self, name) for name in RUN_OPTIONS}

    @property
    def name(self) -> str:
        """The objective, with the model options' tags (a flow guide...) and the KL schedule."""
        values = self.option_values()
        parts = [self.objective]
        parts += [t for o in RUN_OPTIONS.values() if o.tag is not None
                  for t in [o.tag(values)] if t]
        if self.beta != 1:
            parts.append(f"beta-{self.beta:g}")
        if self.kl_warmup:
            parts.append(f"warmup-{self.kl_warmup}")
        if self.free_bits:
            parts.append(f"freebits-{self.free_bits:g}")
        return "+".join(parts)

    def model_options(self) -> dict[str, Any]:
        """The run options that the model takes as constructor arguments (tuples as
        lists, as in JSON); an option at its ``absent`` value is left out, with the
        options that require it."""
        values, out = self.option_values(), {}
        for name in model_options(self.model):
            option = RUN_OPTIONS[name]
            if not option.builder or values[name] is option.absent or values[name] == option.absent:
                continue
            if option.requires is not None and values[option.requires] == RUN_OPTIONS[option.requires].absent:
                continue
            value = values[name]
            out[name] = list(value) if isinstance(value, tuple) else value
        return out

    def model_config(self, x_dim: int) -> dict[str, Any]:
        """Keyword arguments of the model's constructor."""
        return {"x_dim": x_dim, **self.model_options(), **self.extra}

    def to_dict(self) -> dict[str, Any]:
        """The run as saved in ``run.json``: every field and every run option, flat."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "options"}
        for name, value in self.option_values().items():
            out[name] = list(value) if isinstance(value, tuple) else value
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def binarization(cfg: RunConfig, split: str) -> str | None:
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
                        binarize=binarization(cfg, split), seed=cfg.seed)
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
