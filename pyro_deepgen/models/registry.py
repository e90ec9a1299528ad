"""Model names for the CLI, and saving and loading trained models."""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from pyro_deepgen.guides import FLOWS
from pyro_deepgen.models.categorical_vae import CategoricalVAE
from pyro_deepgen.models.dlgm import DLGM
from pyro_deepgen.models.m1 import M1
from pyro_deepgen.models.m2 import M1M2, M2
from pyro_deepgen.models.nice import NICE, RealNVP
from pyro_deepgen.models.run_hooks import (draw_labels, first_stage_then_labelled_batches,
                                           initialize_scale, labelled_batches, layer_active_units,
                                           needs_labels, sums_over_labels, test_error)
from pyro_deepgen.models.sbn import SigmoidBeliefNet
from pyro_deepgen.models.vae import VAE

__all__ = ["DEFAULT_MODEL", "MODELS", "ModelSpec", "RUN_OPTIONS", "RunOption", "register_model", "build_model",
           "model_options", "model_spec", "resolve_model", "save_model", "load_model"]

_ALWAYS = object()  # RunOption.absent's default: the option is always passed on


@dataclass(frozen=True)
class RunOption:
    """A run option that models take: an entry of :class:`~pyro_deepgen.runs.RunConfig`
    and a command-line flag (``--z-dim`` for ``z_dim``), declared once, here or where
    a model registers.

    :param type: parses one command-line value.
    :param noun: what the option gives, for "model X takes no <noun>" (default: its name).
    :param kind: the models that take it, in words ("flows"), for that message.
    :param misuse: the message instead, a template of ``{model}``, ``{value}``, ``{models}``.
    :param strict: setting it (away from the default) for a model that does not take
        it is an error; otherwise it is ignored there.
    :param absent: a value for which the option is left out of the model's
        constructor arguments (e.g. no flow); ``requires``: left out with that option.
    :param check: validates a value (raises ``ValueError``).
    :param tag: the run name's part for the run's option values, or ``None``.
    :param builder: a constructor argument of the model (else its hooks read it).
    :param none_values: values that mean ``None`` (e.g. ``--flow none``).
    """

    name: str
    default: Any
    help: str
    type: Callable[[str], Any] = str
    noun: str | None = None
    kind: str | None = None
    misuse: str | None = None
    strict: bool = True
    absent: Any = _ALWAYS
    requires: str | None = None
    check: Callable[[Any], None] | None = None
    tag: Callable[[Mapping[str, Any]], str | None] | None = None
    builder: bool = True
    none_values: tuple = ()

    def normalize(self, value: Any) -> Any:
        """Lists (from JSON) as tuples; ``none_values`` as ``None``."""
        if isinstance(value, list):
            return tuple(value)
        return None if isinstance(value, str) and value in self.none_values else value


def ints(text: str) -> tuple[int, ...]:
    """A command-line list of integers, ``"200,200"``."""
    try:
        return tuple(int(t) for t in text.split(",") if t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _check_flow(flow: str | None) -> None:
    if flow is not None and flow not in FLOWS:
        raise ValueError(f"unknown flow {flow!r}; valid: none, {', '.join(FLOWS)}")


def _at_least(name: str, low: float) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if value is not None and value < low:
            raise ValueError(f"{name} must be >= {low:g}; got {value}")
    return check


def _leapfrog_steps(value: int) -> None:
    if value < 1:
        raise ValueError(f"the Hamiltonian guide needs hvi_leapfrog >= 1 leapfrog steps per transition; "
                         f"got {value}")


def _sizes(value: tuple[int, ...] | None) -> None:
    if value is not None and (not value or min(value) < 1):
        raise ValueError(f"z_dims must be sizes >= 1; got {value}")


#: the run options, by name (``register_model`` adds a model's own)
RUN_OPTIONS: dict[str, RunOption] = {o.name: o for o in (
    RunOption("z_dim", 50, "latent size (sbn: its one layer of Bernoulli latents; categorical-vae: "
              "the number of 10-class one-hot variables)", int, strict=False),
    RunOption("hidden", (200, 200), "hidden layer widths, e.g. 200,200", ints, strict=False),
    RunOption("activation", "tanh", "the networks' nonlinearity", strict=False),
    RunOption("likelihood", "bernoulli", "bernoulli | gaussian", strict=False),
)}


@dataclass(frozen=True)
class ModelSpec:
    """A registry entry: ``builder(x_dim=..., **{o: ... for o in options})``, where
    ``options`` are the :data:`RUN_OPTIONS` that the model takes, and the model's
    hooks into a training run (:mod:`pyro_deepgen.runs`), each optional:

    * ``prepare(run)``: before the model is built (e.g. draw labels; add
      constructor arguments to ``run.config``);
    * ``make_step(run)``: after it is built (``run.module``): what ``fit`` trains
      with, an objective (for SVI) or a training step (:mod:`pyro_deepgen.steps`);
      default the run's objective;
    * ``callbacks(run)``: ``fit`` callbacks (e.g. a held-out test error per epoch);
    * ``evaluate_extras(module, data, result)``: entries that the evaluation adds
      to, or replaces in, its result;
    * ``check(cfg)``: checks a run configuration beyond its options.
    """

    builder: Callable[..., nn.Module]
    options: tuple[str, ...]
    #: the model is a density on continuous data: 8-bit data are dequantized, never binarized
    dequantize: bool = False
    prepare: Callable[[Any], None] | None = None
    make_step: Callable[[Any], Any] | None = None
    callbacks: Callable[[Any], list] | None = None
    evaluate_extras: Callable[..., dict] | None = None
    check: Callable[[Any], None] | None = None


MODELS: dict[str, ModelSpec] = {}
#: the model of a run that names none
DEFAULT_MODEL = "vae"


def register_model(name: str, builder: Callable[..., nn.Module],
                   options: Sequence[str | RunOption] = ("z_dim", "hidden", "likelihood", "activation"),
                   **hooks: Any) -> None:
    r"""Adds a model/guide pair class (or factory) under ``name``: ``options`` are the
    run options it takes, by name, or declared here as :class:`RunOption`\ s (added
    to :data:`RUN_OPTIONS` and to the command line); ``hooks`` are
    :class:`ModelSpec`'s (``prepare``, ``make_step``, ``callbacks``,
    ``evaluate_extras``, ``check``) and ``dequantize``."""
    names = []
    for o in options:
        if isinstance(o, RunOption):
            known = RUN_OPTIONS.setdefault(o.name, o)
            if known != o:
                raise ValueError(f"the run option {o.name!r} is declared already, differently")
            o = o.name
        if o not in RUN_OPTIONS:
            raise ValueError(f"model {name!r}: unknown run option {o!r}; declare it with RunOption")
        names.append(o)
    MODELS[name] = ModelSpec(builder, tuple(names), **hooks)


def resolve_model(name: str) -> ModelSpec:
    """The registry entry of ``name``, or, for ``"package.module:factory"``, a spec
    whose builder is that factory (imported; it takes ``x_dim`` and the run options
    among its parameters, and returns a model/guide pair, an ``nn.Module`` with
    ``model`` and ``guide``, or a module with the step protocol)."""
    if name in MODELS:
        return MODELS[name]
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"cannot import the model factory {name!r}: {e}") from None
        if name in MODELS:  # the module registered itself under this name
            return MODELS[name]
        params = inspect.signature(factory).parameters
        return ModelSpec(factory, tuple(o for o in RUN_OPTIONS if o in params))
    raise ValueError(f"unknown model {name!r}; valid: {', '.join(sorted(MODELS))}, or "
                     "package.module:factory")


def model_options(name: str) -> tuple[str, ...]:
    """The run options that the model registered as ``name`` takes."""
    return resolve_model(name).options


def model_spec(name: str) -> ModelSpec:
    """The registry entry of ``name``."""
    return resolve_model(name)


def build_model(name: str, **config: Any) -> nn.Module:
    """Builds the model/guide pair registered as ``name`` (or made by the factory
    ``"package.module:factory"``)."""
    module = resolve_model(name).builder(**config)
    if not isinstance(module, nn.Module):
        raise TypeError(f"model {name!r} built a {type(module).__name__}; a model must be an nn.Module "
                        "with model and guide methods (a model/guide pair), or with the step protocol")
    return module


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


# ----------------------------------------------------------------------------- the library's models


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


def _flow_tag(o: Mapping[str, Any]) -> str | None:
    return f"{o['flow']}-{o['num_flows']}" if o["flow"] else None


def _hvi_tag(o: Mapping[str, Any]) -> str | None:
    return f"hvi-{o['hvi']}x{o['hvi_leapfrog']}" if o["hvi"] else None


_GUIDES = (
    RunOption("flow", None, f"flow guide: {' | '.join(FLOWS)} (default: the diagonal Gaussian guide)", noun="flow guide", kind="flows",
              absent=None, check=_check_flow, tag=_flow_tag, none_values=("none", "")),
    RunOption("num_flows", 4, "transforms in the flow guide", int, strict=False, requires="flow"),
    RunOption("hvi", 0, "Hamiltonian transitions refining the guide (Salimans et al. 2015)", int,
              noun="Hamiltonian guide", kind="HVI", absent=0, check=_at_least("hvi", 0), tag=_hvi_tag),
    RunOption("hvi_leapfrog", 5, "leapfrog steps per Hamiltonian transition", int, strict=False,
              requires="hvi", check=_leapfrog_steps),
)
_LAYERS = RunOption("z_dims", None, "stochastic layer sizes, next to x first (dlgm: default 100,50; "
                    "m1m2: M1's latent,M2's latent, default 50,50)", ints, kind="stochastic layers",
                    absent=None, check=_sizes)
_LABELS = (
    RunOption("labels", None, "number of labels, drawn balanced across classes with --seed; the test "
              "error is reported every epoch", int, kind="semi-supervised", builder=False),
    RunOption("labelled_batch_size", None, "labelled rows in each batch besides --batch-size unlabelled "
              "ones (default: min(batch size, labels))", int, builder=False,
              misuse="labelled_batch_size must be >= 1 and needs a model trained on labelled batches; "
                     "got {value} for model {model!r}", check=_at_least("labelled_batch_size", 1)),
)
_ALPHA = RunOption("alpha", 50.0, "weight of the classification term per labelled row", float,
                   strict=False, check=_at_least("alpha", 0))
_PRETRAINED = RunOption("pretrained", None, "reuse the first stage (M1) of the m1m2 run in this folder "
                        "instead of training one", builder=False,
                        misuse="pretrained reuses the first stage of an m1m2 run; model {model!r} has none")
_BASE = ("z_dim", "hidden", "likelihood", "activation")

register_model("vae", VAE, (*_BASE, *_GUIDES))
register_model("sbn", _sbn, ("z_dim", "likelihood"))  # one layer of z_dim Bernoulli latents
# z_dim one-hot variables of 10 classes each
register_model("categorical-vae", _categorical, ("z_dim", "hidden", "activation", "likelihood"))
# exact-likelihood flows on dequantized grey levels; num_couplings and prior via extra options
register_model("nice", NICE, ("hidden", "activation"), dequantize=True, make_step=initialize_scale)
register_model("realnvp", RealNVP, ("hidden", "activation"), dequantize=True, make_step=initialize_scale)
# stochastic layers of sizes z_dims (default 100, 50); one list of hidden widths for every layer
register_model("dlgm", _dlgm, (_LAYERS, "hidden", "likelihood", "activation"),
               evaluate_extras=layer_active_units)
# semi-supervised (Kingma et al. 2014): labels drawn before the model is built (y_dim from them)
register_model("m2", M2, (*_BASE, _ALPHA, *_LABELS), prepare=draw_labels(classes=True),
               make_step=labelled_batches, callbacks=test_error(), check=sums_over_labels)
register_model("m1", M1, (*_BASE, _LABELS[0]), prepare=draw_labels(),
               callbacks=test_error(refit=True), check=needs_labels)
# z_dims = (M1's latent, M2's latent); hidden is M2's, M1's via extra m1_hidden
register_model("m1m2", _m1m2, ("z_dims", "hidden", "likelihood", "activation", "alpha", *_LABELS,
                               _PRETRAINED),
               prepare=draw_labels(classes=True), make_step=first_stage_then_labelled_batches,
               callbacks=test_error(), check=sums_over_labels)
