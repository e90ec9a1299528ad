"""What the library's models add to a training run: their hooks into
:mod:`pyro_deepgen.runs` (see :class:`~pyro_deepgen.models.ModelSpec`).

* the semi-supervised models (M2, M1, M1+M2, Kingma et al. 2014) draw their labels
  before they are built, train on labelled batches beside the unlabelled ones
  (M2, M1+M2, whose first stage M1 trains first, or is reused), and report a
  held-out test error every epoch;
* NICE and RealNVP start their diagonal scale from the data;
* a DLGM counts its active units layer by layer.

Each hook takes the run being prepared (:class:`pyro_deepgen.runs.Run`): its
configuration ``cfg``, the ``module`` once built, its constructor arguments
``config``, ``fit``'s options ``fit_options`` and room for what a hook leaves to
another (``extras``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import Dataset

from pyro_deepgen.data import semi_supervised_data
from pyro_deepgen.infer import make_objective
from pyro_deepgen.infer.enum_elbo import EnumELBO
from pyro_deepgen.models.classifiers import classification_error

__all__ = ["draw_labels", "first_stage_then_labelled_batches", "initialize_scale", "labelled_batches",
           "layer_active_units", "load_first_stage", "needs_labels", "sums_over_labels", "test_error"]

CHECKPOINT = "checkpoint.pt"  # the name fit gives its checkpoint (pyro_deepgen.checkpoints)


def needs_labels(cfg: Any) -> None:
    """A semi-supervised model needs ``labels``."""
    if cfg.labels is None or cfg.labels < 1:
        raise ValueError(f"model {cfg.model!r} is semi-supervised: it needs --labels N (N >= 1); "
                         f"got {cfg.labels}")


def sums_over_labels(cfg: Any) -> None:
    """M2 and M1+M2 sum over the labels exactly (``TraceEnum_ELBO``), with the ELBO only."""
    needs_labels(cfg)
    if cfg.objective != "elbo" or cfg.kl_warmup or cfg.free_bits:
        raise ValueError(f"model {cfg.model!r} sums over its labels exactly (TraceEnum_ELBO): it "
                         f"trains with --objective elbo, with no KL warm-up or free bits (beta "
                         f"weights its style latent's KL); got {cfg.name!r}")


def draw_labels(classes: bool = False) -> Callable[[Any], None]:
    """The ``prepare`` hook of a semi-supervised model: draws ``cfg.labels`` labels
    (balanced, with the run's seed; see :func:`pyro_deepgen.data.semi_supervised_data`),
    keeps them in ``run.extras["labels"]`` and writes ``labels.json``; with
    ``classes``, gives the model the number of classes (``y_dim``)."""

    def prepare(run: Any) -> None:
        cfg = run.cfg
        lab = semi_supervised_data(cfg.dataset, cfg.labels, seed=cfg.seed, root=cfg.data_root,
                                   download=cfg.download, binarize=run.binarization("test"))
        run.extras["labels"] = lab
        if classes:
            run.config["y_dim"] = lab.num_classes
        run.write("labels.json", json.dumps({"protocol": lab.protocol, "num_classes": lab.num_classes,
                                             "pool_indices": lab.indices.tolist()}))

    return prepare


def labelled_batches(run: Any) -> EnumELBO:
    """M2's training: ``EnumELBO`` (labels summed out exactly, ``beta`` on the style
    latent's KL) on every unlabelled batch and a labelled batch beside it."""
    lab = run.extras["labels"]
    run.fit_options.update(labelled=lab.labelled, labelled_batch_size=run.cfg.labelled_batch_size)
    return EnumELBO(kl_weights={run.module.style_site: run.cfg.beta})


def first_stage_then_labelled_batches(run: Any) -> EnumELBO:
    """M1+M2: the first stage (M1) trains by the ELBO into ``<out>/pretrain``, or is
    loaded from an earlier run's (``pretrained``); then M2 trains as :func:`labelled_batches`."""
    pretrain = run.module.pretrain
    if run.cfg.pretrained is not None:
        load_first_stage(pretrain, run.cfg.pretrained)
    else:
        run.fit(pretrain, make_objective("elbo"), "pretrain")
    return labelled_batches(run)


def test_error(refit: bool = False) -> Callable[[Any], list[Callable[[dict], None]]]:
    """The ``callbacks`` hook: adds the held-out ``test_error`` of ``module.classify``
    to each epoch's record (with ``refit``, fitting ``module.fit_classifier`` on the
    labels first, as M1 does)."""

    def callbacks(run: Any) -> list[Callable[[dict], None]]:
        module, device, seed = run.module, run.cfg.device, run.cfg.seed
        lab = run.extras["labels"]
        (x, y), (lx, ly) = lab.heldout.tensors, lab.labelled.tensors

        def record(r: dict) -> None:
            if refit:
                module.fit_classifier(lx.to(device), ly.to(device), seed=seed)
            r["test_error"] = float(classification_error(module, x.to(device), y.to(device)))

        return [record]

    return callbacks


def load_first_stage(pretrain: nn.Module, run: str | os.PathLike) -> None:
    """Loads the first stage (M1 of M1+M2) that the m1m2 run in folder ``run``
    trained (its ``pretrain/checkpoint.pt``) into ``pretrain``, an :class:`~pyro_deepgen.models.M1`.

    :raises FileNotFoundError: when ``run`` has no trained first stage.
    :raises ValueError: when its networks differ from ``pretrain``'s.
    """
    path = Path(run) / "pretrain" / CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: --pretrained must be the folder of an m1m2 run "
                                "whose first stage has trained")
    params = torch.load(path, map_location="cpu", weights_only=True)["params"]
    vae = pretrain.vae
    for part in ("encoder", "decoder"):
        prefix = f"{vae.name}.{part}$$$"
        state = {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}
        try:
            getattr(vae, part).load_state_dict(state)
        except RuntimeError as e:
            raise ValueError(f"{path} holds a different M1 {part} than this run builds (compare "
                             f"z_dims and m1_hidden with {Path(run) / 'run.json'}): {e}") from None


def initialize_scale(run: Any) -> Any:
    """NICE and RealNVP: the diagonal scale starts from the data (a fresh run only);
    then the run's objective."""
    if not run.resuming:
        run.module.initialize_scale(run.train.tensors[0][:1000])
    return run.objective()


def layer_active_units(module: nn.Module, data: Dataset, device: Any) -> dict[str, Any]:
    """A DLGM's active units, layer by layer, the layer below's noise averaged out
    (:meth:`~pyro_deepgen.models.DLGM.active_units`)."""
    layers = module.active_units(data)
    per_site = {au.site: au.num_active for au in layers}
    return {"active_units_per_site": per_site, "active_units": sum(per_site.values()),
            "latent_dim": sum(au.variance.numel() for au in layers)}
