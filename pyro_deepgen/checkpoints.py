"""The training state that ``fit`` carries from step to step, and its checkpoints.

A checkpoint is one ``torch.save`` of plain tensors, numbers and lists (read back
with ``weights_only=True``: nothing is unpickled), written atomically: the
:class:`TrainState` (where the run is, its history and early-stopping record),
the random state of every process, and what the step keeps (parameters,
optimizer, the objective's running state).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch

__all__ = ["BEST", "CHECKPOINT", "HISTORY", "TrainState", "atomic_save", "load_checkpoint", "load_params",
           "params", "rng_state", "set_rng_state", "write_history"]

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
HISTORY = "history.json"
FORMAT = 1


@dataclass
class TrainState:
    """Where a run stands: the next batch to take, the step count, the history of
    finished epochs, early stopping, and the running sums of the current epoch.

    Example:
        >>> s = TrainState(epoch=1, batch=3, step=10)
        >>> TrainState.from_checkpoint(s.to_checkpoint()) == s
        True
    """

    epoch: int = 0
    #: the next batch of ``epoch``
    batch: int = 0
    #: optimizer steps taken
    step: int = 0
    history: list[dict] = field(default_factory=list)
    best_val: float = -math.inf
    bad_epochs: int = 0
    epoch_loss: float = 0.0
    epoch_seen: int = 0
    epoch_seconds: float = 0.0

    def to_checkpoint(self, **parts: Any) -> dict[str, Any]:
        """The checkpoint's dictionary: this state's fields and ``parts``
        (``params``, ``optim``, ``rng``, ``loss_state``, ...)."""
        return {"format": FORMAT, **dataclasses.asdict(self), **parts}

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> "TrainState":
        """The state saved in ``ckpt`` (the other parts are the caller's)."""
        return cls(**{f.name: ckpt[f.name] for f in dataclasses.fields(cls)})

    def end_epoch(self, record: dict, complete: bool) -> None:
        """Appends ``record``; a complete epoch moves on to the next one."""
        self.history.append(record)
        if complete:
            self.epoch, self.batch = self.epoch + 1, 0
            self.epoch_loss, self.epoch_seen, self.epoch_seconds = 0.0, 0, 0.0

    def improved(self, val: float) -> bool:
        """Records a validation figure; whether it is the best so far."""
        if val > self.best_val:
            self.best_val, self.bad_epochs = val, 0
            return True
        self.bad_epochs += 1
        return False


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file, then renamed over ``path``."""
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _atomic_text(text: str, path: Path) -> None:
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Reads a checkpoint written by :func:`~pyro_deepgen.train.fit` (``weights_only``:
    nothing is unpickled)."""
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if ckpt.get("format") != FORMAT:
        raise ValueError(f"{path}: not a pyro_deepgen checkpoint (format {ckpt.get('format')!r})")
    return ckpt


def rng_state() -> dict:
    """The random state of torch (CPU and CUDA), NumPy and Python, as tensors and numbers."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restores what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    random.setstate(_to_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_tuples(x: Any) -> Any:
    return tuple(_to_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


def params() -> dict[str, torch.Tensor]:
    """A copy of every parameter in Pyro's parameter store (unconstrained)."""
    return {k: v.detach().clone() for k, v in pyro.get_param_store().named_parameters()}


def load_params(values: dict[str, torch.Tensor]) -> None:
    """Copies ``values`` into Pyro's parameters of the same names."""
    store = dict(pyro.get_param_store().named_parameters())
    missing = sorted(set(values) - set(store))
    if missing:
        raise RuntimeError(f"checkpoint has parameters this model does not create: {missing}")
    with torch.no_grad():
        for name, value in values.items():
            store[name].copy_(value)


def write_history(history: list[dict], out_dir: Path) -> None:
    """``history.json`` and ``history.csv`` (a column for every key), atomically."""
    _atomic_text(json.dumps(history, indent=1), out_dir / HISTORY)
    keys: list[str] = []
    for r in history:
        keys += [k for k in r if k not in keys]
    tmp = out_dir / f"history.csv.tmp{os.getpid()}"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(history)
    os.replace(tmp, out_dir / "history.csv")
