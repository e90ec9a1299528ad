"""Labelled subsets for semi-supervised learning, and the few-labels protocol.

The protocol (see ``docs/datasets.rst``):

* ``binarized_mnist``: the 50000 training images are the unlabelled set. The
  labelled test split (10000 images, ``binarized_mnist_test_labels.txt``) is
  split by a fixed permutation (``numpy.random.default_rng(0)``, independent of
  the run's seed) into a *pool* of 5000, from which the labels are drawn, and
  5000 *held out* for the test error. The training images have no labels, so
  unlike Kingma et al. (2014), whose labels came from the training set, the
  labelled images are not among the unlabelled ones.
* a data set whose training split is labelled (``digits``, ``mnist``): the
  paper's protocol. The pool is the training split (so the labelled images are
  also in the unlabelled set) and the test split is held out.

Labels are drawn from the pool balanced across classes (``n // K`` per class;
the remainder goes to classes chosen at random), with a seed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from .datasets import load_dataset

__all__ = ["POOL_SEED", "LabelledData", "check_semi_supervised", "draw_labels", "labelled_subset",
           "semi_supervised_data"]

#: the seed of the fixed pool / held-out permutation of the binarized MNIST test split
POOL_SEED = 0
#: binarized MNIST: the size of the pool (the rest of the 10000 test images is held out)
POOL_SIZE = 5000


def _check_labels(y: torch.Tensor, num_classes: int | None) -> int:
    if not torch.is_tensor(y) or y.dim() != 1 or y.dtype.is_floating_point or y.dtype == torch.bool:
        raise ValueError("labels must be a 1-D integer tensor of class indices; got "
                         + (f"a {y.dtype} tensor of shape {tuple(y.shape)}" if torch.is_tensor(y)
                            else type(y).__name__))
    k = int(y.max()) + 1 if num_classes is None and y.numel() else num_classes or 0
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= k):
        bad = int(y.min()) if int(y.min()) < 0 else int(y.max())
        raise ValueError(f"labels must be in [0, {k}) (num_classes={k}); got {bad}")
    return k


def draw_labels(y: torch.Tensor, num_labels: int, num_classes: int | None = None,
                seed: int = 0) -> torch.Tensor:
    """Indices of ``num_labels`` entries of ``y`` (a pool's labels), balanced
    across the ``num_classes`` classes (default ``max(y) + 1``): ``num_labels //
    num_classes`` of each, and one more for ``num_labels % num_classes`` classes
    chosen at random, each class's draw uniform without replacement. The same
    ``seed`` gives the same indices.

    :raises ValueError: for more labels than the pool holds, a class with fewer
        examples than its share, or labels outside ``[0, num_classes)``.
    """
    k = _check_labels(y, num_classes)
    if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1:
        raise ValueError(f"num_labels must be a positive integer; got {num_labels!r}")
    if num_labels > y.numel():
        raise ValueError(f"asked for {num_labels} labels, but the labelled pool holds only {y.numel()}")
    rng = np.random.default_rng(seed)
    share = np.full(k, num_labels // k)
    share[rng.choice(k, num_labels % k, replace=False)] += 1
    y_np = y.cpu().numpy()
    picked = []
    for c in range(k):
        members = np.flatnonzero(y_np == c)
        if len(members) < share[c]:
            raise ValueError(f"class {c} has {len(members)} examples in the labelled pool, fewer than "
                             f"the {share[c]} that a balanced draw of {num_labels} labels needs")
        picked.append(rng.choice(members, share[c], replace=False))
    return torch.as_tensor(np.sort(np.concatenate(picked)), dtype=torch.long)


def labelled_subset(pool: TensorDataset, num_labels: int, num_classes: int | None = None,
                    seed: int = 0) -> TensorDataset:
    """``TensorDataset(x, y)`` of a balanced draw of :func:`draw_labels` from ``pool``."""
    x, y = _xy(pool, "pool")
    idx = draw_labels(y, num_labels, num_classes, seed)
    return TensorDataset(x[idx], y[idx])


def _xy(data: Dataset, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    tensors = getattr(data, "tensors", None)
    if tensors is None or len(tensors) < 2:
        raise ValueError(f"the {what} must be a TensorDataset of (x, y)")
    return tensors[0], tensors[1]


def check_semi_supervised(unlabelled: Dataset, labelled: Dataset,
                          num_classes: int | None = None) -> int:
    """Checks that ``labelled`` holds ``(x, y)`` with labels in ``[0, num_classes)``
    and that its ``x`` has the features of ``unlabelled``'s; returns the number of
    classes."""
    x_l, y_l = _xy(labelled, "labelled set")
    x_u = unlabelled[0][0]
    if tuple(x_l.shape[1:]) != tuple(x_u.shape):
        raise ValueError(f"labelled and unlabelled data differ in their features: labelled rows have "
                         f"shape {tuple(x_l.shape[1:])}, unlabelled rows {tuple(x_u.shape)}")
    return _check_labels(y_l, num_classes)


@dataclass
class LabelledData:
    """The labelled side of a semi-supervised run: the drawn ``labelled`` set,
    the ``heldout`` set for the test error, the drawn rows' ``indices`` in the
    pool, and the ``protocol`` in words."""

    labelled: TensorDataset
    heldout: TensorDataset
    indices: torch.Tensor
    num_classes: int
    protocol: str


def semi_supervised_data(name: str, num_labels: int, seed: int = 0,
                         root: str | os.PathLike | None = None, download: bool = False,
                         binarize: str | None = None) -> LabelledData:
    """The labelled set (``num_labels``, drawn balanced with ``seed``) and the
    held-out set of data set ``name`` under the module's protocol; the
    unlabelled set is ``load_dataset(name, "train")``. ``binarize`` applies
    to both (``"static"`` draws with ``seed``)."""
    if name == "binarized_mnist":
        test = load_dataset(name, "test", root=root, download=download, binarize=binarize, seed=seed)
        if len(test.tensors) < 2:
            raise FileNotFoundError(
                "binarized_mnist's test labels (binarized_mnist/binarized_mnist_test_labels.txt) "
                "are missing: the few-labels protocol draws its labels from the test split")
        x, y = test.tensors
        perm = torch.as_tensor(np.random.default_rng(POOL_SEED).permutation(len(x)))
        pool_idx, held_idx = perm[:POOL_SIZE], perm[POOL_SIZE:]
        pool = TensorDataset(x[pool_idx], y[pool_idx])
        heldout = TensorDataset(x[held_idx], y[held_idx])
        protocol = (f"labels drawn from a pool of {POOL_SIZE} test images; test error on the other "
                    f"{len(held_idx)} (fixed split, seed {POOL_SEED}); unlabelled: the training split")
    else:
        train = load_dataset(name, "train", root=root, download=download, binarize=binarize, seed=seed)
        test = load_dataset(name, "test", root=root, download=download, binarize=binarize, seed=seed)
        if len(train.tensors) < 2 or len(test.tensors) < 2:
            raise ValueError(f"dataset {name!r} has no labels for semi-supervised learning")
        pool, heldout = TensorDataset(*train.tensors[:2]), TensorDataset(*test.tensors[:2])
        protocol = "labels drawn from the training split (also unlabelled); test error on the test split"
    k = int(max(pool.tensors[1].max(), heldout.tensors[1].max())) + 1
    idx = draw_labels(pool.tensors[1], num_labels, k, seed)
    labelled = TensorDataset(pool.tensors[0][idx], pool.tensors[1][idx])
    return LabelledData(labelled, heldout, idx, k, f"{num_labels} labels (seed {seed}); {protocol}")
