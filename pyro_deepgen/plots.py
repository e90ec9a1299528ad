"""Matplotlib figures shared by the CLI and the tutorials."""

from __future__ import annotations

import math
import os
from typing import Callable, Mapping, Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

__all__ = ["image_grid", "training_curves", "bound_curves", "latent_manifold", "snr_against_k", "kl_per_unit",
           "save_figure"]


def _tile(images: torch.Tensor, image_shape: Sequence[int], nrow: int) -> torch.Tensor:
    h, w = image_shape
    n = images.shape[0]
    ncol = math.ceil(n / nrow)
    canvas = torch.ones(ncol * (h + 1) + 1, nrow * (w + 1) + 1)
    for i in range(n):
        r, c = divmod(i, nrow)
        canvas[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + c * (w + 1):1 + c * (w + 1) + w] = \
            images[i].reshape(h, w)
    return canvas


def image_grid(images: torch.Tensor, image_shape: Sequence[int], nrow: int | None = None,
               title: str | None = None, ax=None) -> Figure:
    """Tiles ``images`` (``(n, h*w)``, values in [0, 1]) into one grey image."""
    images = images.detach().float().cpu()
    nrow = nrow or math.ceil(math.sqrt(images.shape[0]))
    canvas = _tile(images, image_shape, nrow)
    if ax is None:
        fig, ax = plt.subplots(figsize=(0.5 * nrow + 1, 0.5 * canvas.shape[0] / canvas.shape[1] * nrow + 1))
    else:
        fig = ax.figure
    ax.imshow(canvas.numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return fig


_LOSS = "training loss per datapoint (nats)"
_BOUND = "validation ELBO per datapoint (nats)"


def _epochs(hist: Sequence[dict]) -> list[float]:
    return [r["epoch"] for r in hist]


def _seconds(hist: Sequence[dict]) -> list[float]:
    return torch.tensor([float(r["seconds"]) for r in hist]).cumsum(0).tolist()


def _curves(histories: Mapping[str, Sequence[dict]], panels: Sequence[tuple], title: str | None) -> Figure:
    """One panel per ``(x_of_history, y_key, xlabel, ylabel, xscale)``, one line per run
    (runs whose records lack ``y_key`` are left out of that panel)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6))
    for ax, (x_of, key, xlabel, ylabel, xscale) in zip(axes, panels):
        for name, hist in histories.items():
            hist = [r for r in hist if key in r]
            if hist:
                ax.plot(x_of(hist), [r[key] for r in hist], label=name)
        ax.set(xlabel=xlabel, ylabel=ylabel, xscale=xscale)
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def training_curves(histories: Mapping[str, Sequence[dict]], title: str | None = None) -> Figure:
    """Training loss (per datapoint) and validation ELBO against epoch, one line per run."""
    return _curves(histories, [(_epochs, "train_loss", "epoch", _LOSS, "linear"),
                               (_epochs, "val_elbo", "epoch", _BOUND, "linear")], title)


def bound_curves(histories: Mapping[str, Sequence[dict]], title: str | None = None) -> Figure:
    """Validation ELBO against epoch (log scale) and against training seconds, one line
    per run: the two views of an equal-budget comparison of runs whose steps differ in cost."""
    return _curves(histories, [(_epochs, "val_elbo", "epoch", _BOUND, "log"),
                               (_seconds, "val_elbo", "training seconds", _BOUND, "linear")], title)


def latent_manifold(decode: Callable[[torch.Tensor], torch.Tensor], image_shape: Sequence[int],
                    n: int = 20, title: str | None = None) -> Figure:
    """Decoder means on an ``n x n`` grid of a 2-D latent space at the standard
    Normal's quantiles (Kingma & Welling 2014, Fig. 4)."""
    q = torch.linspace(0.5 / n, 1 - 0.5 / n, n)
    grid = torch.distributions.Normal(0.0, 1.0).icdf(q)
    z = torch.stack(torch.meshgrid(grid, grid.flip(0), indexing="xy"), -1).reshape(-1, 2)
    return image_grid(decode(z).reshape(n * n, -1), image_shape, nrow=n, title=title)


def snr_against_k(curves: Mapping[str, Mapping[str, Sequence[tuple[int, float]]]],
                  ylabel: str = "mean gradient SNR") -> Figure:
    """One panel per parameter group (e.g. ``"guide"``, ``"model"``), one line per
    estimator, of ``(k, value)`` points on log-log axes (Rainforth et al. 2018, Fig. 1)."""
    groups = list(dict.fromkeys(g for per in curves.values() for g in per))
    fig, axes = plt.subplots(1, len(groups), figsize=(4.5 * len(groups), 3.6), squeeze=False)
    for ax, group in zip(axes[0], groups):
        for label, per in curves.items():
            if group in per:
                ax.plot(*zip(*per[group]), marker="o", label=label)
        ax.set(xscale="log", yscale="log", xlabel="k (particles)", ylabel=ylabel, title=group)
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    fig.tight_layout()
    return fig


def kl_per_unit(kls: Mapping[str, torch.Tensor], threshold: float | None = None,
                title: str | None = None) -> Figure:
    """Per-unit KL (nats) of each run, sorted from largest to smallest, against
    the unit's rank: collapsed units sit at zero on the right."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for label, kl in kls.items():
        values = torch.as_tensor(kl).detach().flatten().sort(descending=True).values.cpu()
        ax.plot(range(1, values.numel() + 1), values.numpy(), marker=".", label=label)
    if threshold is not None:
        ax.axhline(threshold, color="grey", linestyle=":", label=f"{threshold:g} nats")
    ax.set(xlabel="unit (sorted by KL)", ylabel="KL(q(z_j|x) || p(z_j)) (nats)", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: str | os.PathLike) -> None:
    """Saves ``fig`` to ``path`` and closes it."""
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
