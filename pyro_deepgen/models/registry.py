"""Model names for the CLI, and saving and loading trained models."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from pyro_deepgen.models.categorical_vae import CategoricalVAE
from pyro_deepgen.models.dlgm import DLGM
from pyro_deepgen.models.nice import NICE, RealNVP
from pyro_deepgen.models.sbn import SigmoidBeliefNet
from pyro_deepgen.models.semi_supervised import M1, M1M2, M2
from pyro_deepgen.models.vae import VAE

__all__ = ["MODELS", "ModelSpec", "register_model", "build_model", "model_options", "model_spec",
           "save_model", "load_model"]


@dataclass(frozen=True)
class ModelSpec:
    """A registry entry: ``builder(x_dim=..., **{o: ... for o in options})``, where
    ``options`` are the run options (``z_dim``, ``hidden``, ``likelihood``,
    ``activation``, ``flow``, ``num_flows``) that the model takes."""

    builder: Callable[..., nn.Module]
    options: tuple[str, ...]
    #: the model is a density on continuous data: 8-bit data are dequantized, never binarized
    dequantize: bool = False
    #: how the model uses labels (``--labels``): ``None`` (it does not);
    #: ``"batches"``: ``model(x, y)`` on labelled rows in every batch besides
    #: ``model(x)`` on unlabelled ones, trained with
    #: :class:`~pyro_deepgen.models.EnumELBO` (M2, M1+M2); ``"classifier"``: the
    #: generative part trains on the images alone, then ``fit_classifier(x, y)`` (M1)
    labels: str | None = None


def _sbn(x_dim: int, z_dim: int = 200, likelihood: str = "bernoulli") -> SigmoidBeliefNet:
    if likelihood != "bernoulli":
        raise ValueError(f"the sigmoid belief net has a Bernoulli likelihood; got {likelihood!r}")
    return SigmoidBeliefNet(x_dim, layers=(z_dim,))


def _categorical(x_dim: int, z_dim: int = 20, hidden=(200,), activation: str = "tanh",
                 likelihood: str = "bernoulli") -> CategoricalVAE:
    if likelihood != "bernoulli":
        raise ValueError(f"the categorical VAE has a Bernoulli likelihood; got {likelihood!r}")
    return CategoricalVAE(x_dim, num_vars=z_dim, num_classes=10, hidden=hidden, activation=activation)


def _dlgm(x_dim: int, z_dims=None, hidden=((200, 200), (100, 100)), likelihood: str = "bernoulli",
          activation: str = "tanh") -> DLGM:
    return DLGM(x_dim, z_dims=(100, 50) if z_dims is None else tuple(z_dims), hidden=hidden,
                likelihood=likelihood, activation=activation)


def _m1m2(x_dim: int, y_dim: int = 10, z_dims=None, hidden=(500,), likelihood: str = "bernoulli",
          activation: str = "softplus", alpha: float = 50.0, m1_hidden=(600, 600)) -> M1M2:
    z1_dim, z_dim = (50, 50) if z_dims is None else tuple(z_dims)
    return M1M2(x_dim, y_dim, z1_dim, z_dim, m1_hidden=m1_hidden, hidden=hidden, likelihood=likelihood,
                alpha=alpha, activation=activation)


MODELS: dict[str, ModelSpec] = {
    "vae": ModelSpec(VAE, ("z_dim", "hidden", "likelihood", "activation", "flow", "num_flows",
                           "hvi", "hvi_leapfrog")),
    "sbn": ModelSpec(_sbn, ("z_dim", "likelihood")),  # one layer of z_dim Bernoulli latents
    # z_dim one-hot variables of 10 classes each
    "categorical-vae": ModelSpec(_categorical, ("z_dim", "hidden", "activation", "likelihood")),
    # exact-likelihood flows on dequantized grey levels; num_couplings and prior via extra options
    "nice": ModelSpec(NICE, ("hidden", "activation"), dequantize=True),
    "realnvp": ModelSpec(RealNVP, ("hidden", "activation"), dequantize=True),
    # stochastic layers of sizes z_dims (default 100, 50); one list of hidden widths for every layer
    "dlgm": ModelSpec(_dlgm, ("z_dims", "hidden", "likelihood", "activation")),
    # semi-supervised (Kingma et al. 2014); y_dim comes from the labelled data
    "m2": ModelSpec(M2, ("z_dim", "hidden", "likelihood", "activation", "alpha"), labels="batches"),
    "m1": ModelSpec(M1, ("z_dim", "hidden", "likelihood", "activation"), labels="classifier"),
    # z_dims = (M1's latent, M2's latent); hidden is M2's, M1's via extra m1_hidden
    "m1m2": ModelSpec(_m1m2, ("z_dims", "hidden", "likelihood", "activation", "alpha"), labels="batches"),
}


def register_model(name: str, builder: Callable[..., nn.Module],
                   options: tuple[str, ...] = ("z_dim", "hidden", "likelihood", "activation")) -> None:
    """Adds a model/guide pair class (or factory) under ``name``."""
    MODELS[name] = ModelSpec(builder, tuple(options))


def _spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def model_options(name: str) -> tuple[str, ...]:
    """The run options that the model registered as ``name`` takes."""
    return _spec(name).options


def model_spec(name: str) -> ModelSpec:
    """The registry entry of ``name``."""
    return _spec(name)


def build_model(name: str, **config: Any) -> nn.Module:
    """Builds the model/guide pair registered as ``name``."""
    return _spec(name).builder(**config)


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
