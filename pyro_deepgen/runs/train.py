"""Training one configuration into a run folder: :func:`train_run`."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyro
from torch import nn
from torch.utils.data import Dataset

from pyro_deepgen.checkpoints import CHECKPOINT
from pyro_deepgen.data import DATASETS
from pyro_deepgen.distributed import init_distributed, rank
from pyro_deepgen.infer import make_objective
from pyro_deepgen.models import build_model, model_spec, save_model
from pyro_deepgen.runs.config import RUN, RunConfig, binarization, dataset_for, load_run_config
from pyro_deepgen.steps import Step
from pyro_deepgen.train import fit

__all__ = ["Run", "train_run"]

# fields that may change when a run is resumed: where data comes from, and where it runs
_NOT_RESULTS = {"data_root", "download", "device", "backend", "check_sync_every", "compile"}


@dataclass
class Run:
    """One training run in the making: what a model's hooks read and extend
    (see :class:`~pyro_deepgen.models.ModelSpec`)."""

    cfg: RunConfig
    out: Path
    train: Dataset
    val: Dataset | None
    #: this process writes the run's files (rank 0)
    writer: bool
    #: a checkpoint is there to resume
    resuming: bool
    #: the model's constructor arguments
    config: dict[str, Any]
    #: :func:`~pyro_deepgen.train.fit`'s keyword arguments
    fit_options: dict[str, Any]
    #: the model, once built
    module: nn.Module | None = None
    #: what one hook leaves for another (e.g. drawn labels)
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._stage_options = dict(self.fit_options)

    def objective(self):
        """The run's objective, with its KL schedule."""
        return make_objective(self.cfg.objective, self.cfg.kl_schedule())

    def binarization(self, split: str) -> str | None:
        """How ``split`` of the run's data set is binarized (see :func:`~pyro_deepgen.runs.dataset_for`)."""
        return binarization(self.cfg, split)

    def write(self, name: str, text: str) -> None:
        """Writes ``text`` to the file ``name`` of the run folder (rank 0 only)."""
        if self.writer:
            (self.out / name).write_text(text)

    def fit(self, module: nn.Module, loss: Any, subdir: str) -> list[dict]:
        """Trains a stage of the model (e.g. a first stage that the model builds on)
        into ``<out>/<subdir>``, with the run's data and training options."""
        return fit(module.model, module.guide, self.train, loss, out=self.out / subdir, **self._stage_options)


def train_run(cfg: RunConfig, out: str | os.PathLike, progress: bool = True) -> list[dict]:
    """Trains ``cfg`` into the folder ``out`` (resuming a run already there).
    Under ``torchrun``, trains data-parallel; only rank 0 writes to ``out``.

    The model's hooks (:class:`~pyro_deepgen.models.ModelSpec`) run in order:
    ``prepare`` before the model is built, ``make_step`` after (an objective for
    SVI, or a training step), ``callbacks`` for ``fit``."""
    init_distributed(cfg.device, cfg.backend)
    writer = rank() == 0
    out = Path(out)
    run_path = out / RUN
    if run_path.exists():
        old, new = load_run_config(out).to_dict(), cfg.to_dict()
        changed = sorted(k for k in new if k not in _NOT_RESULTS and old.get(k) != new[k])
        if changed:
            raise ValueError(f"{out} holds a different run ({run_path} differs in "
                             f"{', '.join(changed)}); use another --out")
    train = dataset_for(cfg, "train")
    val = dataset_for(cfg, "valid") if "valid" in DATASETS[cfg.dataset].splits else None
    if writer:
        out.mkdir(parents=True, exist_ok=True)
        run_path.write_text(json.dumps(cfg.to_dict(), indent=2))
    pyro.clear_param_store()
    pyro.set_rng_seed(cfg.seed)
    options = dict(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed,
                   val_dataset=val, patience=cfg.patience, device=cfg.device, max_time=cfg.max_time,
                   checkpoint_every=cfg.checkpoint_every, progress=progress, backend=cfg.backend,
                   check_sync_every=cfg.check_sync_every,
                   compile=False if cfg.compile == "none" else cfg.compile)
    spec = model_spec(cfg.model)
    run = Run(cfg, out, train, val, writer, (out / CHECKPOINT).exists(),
              cfg.model_config(train.tensors[0].shape[1]), options)
    if spec.prepare is not None:
        spec.prepare(run)
    run.module = build_model(cfg.model, **run.config)
    if spec.make_step is not None:
        made = spec.make_step(run)
    else:  # a module with the step protocol trains itself; a model/guide pair by SVI
        made = run.module if isinstance(run.module, Step) else run.objective()
    if spec.callbacks is not None:
        run.fit_options["callbacks"] = spec.callbacks(run)
    if isinstance(made, Step):
        history = fit(dataset=train, step=made, out=out, **run.fit_options)
    else:
        history = fit(run.module.model, run.module.guide, train, made, out=out, **run.fit_options)
    if writer:
        save_model(run.module.cpu(), cfg.model, run.config, out)
    return history
