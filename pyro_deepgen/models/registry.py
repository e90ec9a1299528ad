"""Model names for the CLI, and saving and loading trained models."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from pyro_deepgen.models.vae import VAE

__all__ = ["MODELS", "register_model", "build_model", "save_model", "load_model"]

MODELS: dict[str, Callable[..., nn.Module]] = {"vae": VAE}


def register_model(name: str, builder: Callable[..., nn.Module]) -> None:
    """Adds a model/guide pair class (or factory) under ``name``."""
    MODELS[name] = builder


def build_model(name: str, **config: Any) -> nn.Module:
    """Builds the model/guide pair registered as ``name``."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(sorted(MODELS))}")
    return MODELS[name](**config)


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    write(str(tmp))
    os.replace(tmp, path)


def save_model(module: nn.Module, name: str, config: dict, directory: str | os.PathLike) -> None:
    """Writes ``model.json`` (name and constructor config) and ``model.pt``
    (the state dict) to ``directory``, each atomically."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    _atomic_write(d / "model.json", lambda p: Path(p).write_text(
        json.dumps({"model": name, "config": config}, indent=2)))
    _atomic_write(d / "model.pt", lambda p: torch.save(module.state_dict(), p))


def load_model(directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuilds the module saved by :func:`save_model` (``weights_only`` load)."""
    d = Path(directory)
    meta_path = d / "model.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"no trained model in {d}: {meta_path} is missing")
    meta = json.loads(meta_path.read_text())
    module = build_model(meta["model"], **meta["config"])
    state = torch.load(d / "model.pt", map_location=map_location, weights_only=True)
    module.load_state_dict(state)
    return module
