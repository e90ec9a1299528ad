r"""Class labels and the classifiers of the few-labels experiments.

Kingma, Rezende, Mohamed & Welling, "Semi-supervised Learning with Deep
Generative Models", 2014, arXiv:1406.5298, Table 1: the test error of a
classifier trained with ``n`` labelled images (and, for the generative models,
the unlabelled rest). This module holds what the semi-supervised models
(:class:`~pyro_deepgen.models.M1`, :class:`~pyro_deepgen.models.M2`,
:class:`~pyro_deepgen.models.M1M2`) and their baseline share about labels: the
check of a label tensor, the scikit-learn classifiers that M1 fits on its
features, the supervised-only baseline, and the error

.. math:: \mathrm{err} = \frac1N \sum_{n=1}^N [\hat y(x_n) \ne y_n]

of anything with a ``classify(x)`` method.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from pyro_deepgen.models._common import check_x, mlp

__all__ = ["CLASSIFIERS", "SupervisedClassifier", "check_labels", "classification_error", "fit_sklearn"]

#: the scikit-learn classifiers of :func:`fit_sklearn` (and of :class:`~pyro_deepgen.models.M1`)
CLASSIFIERS = ("logistic", "svm")


def check_labels(y: torch.Tensor, y_dim: int, batch: int | None = None, who: str = "labels") -> None:
    """Raises a ``ValueError`` unless ``y`` is an integer tensor of class
    indices in ``[0, y_dim)`` (of shape ``(batch,)`` when ``batch`` is given).

    Example:
        >>> check_labels(torch.tensor([0, 2, 1]), y_dim=3)
        >>> check_labels(torch.tensor([0, 3]), y_dim=3)
        Traceback (most recent call last):
        ...
        ValueError: labels must be in [0, 3) (y_dim=3); got 3
    """
    if not torch.is_tensor(y) or y.dtype.is_floating_point or y.dtype == torch.bool or y.dim() != 1:
        what = f"{y.dtype} tensor of shape {tuple(y.shape)}" if torch.is_tensor(y) else type(y).__name__
        raise ValueError(f"{who} must be a 1-D integer tensor of class indices; got a {what}")
    if batch is not None and y.shape[0] != batch:
        raise ValueError(f"{who} has {y.shape[0]} entries but x has {batch} rows")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= y_dim):
        bad = int(y.min()) if int(y.min()) < 0 else int(y.max())
        raise ValueError(f"{who} must be in [0, {y_dim}) (y_dim={y_dim}); got {bad}")


def fit_sklearn(kind: str, features: torch.Tensor, y: torch.Tensor, seed: int) -> Any:
    """A scikit-learn classifier fitted on ``features`` (``(n, d)``) with labels
    ``y``: ``"logistic"`` (``LogisticRegression``) or ``"svm"`` (``SVC`` with an
    RBF kernel). The paper's M1 used a transductive SVM, which scikit-learn lacks.

    Example:
        >>> x = torch.randn(40, 2); y = (x[:, 0] > 0).long()
        >>> fit_sklearn("logistic", x, y, seed=0).score(x.numpy(), y.numpy()) > 0.9
        True
    """
    if kind not in CLASSIFIERS:
        raise ValueError(f"unknown classifier {kind!r}; valid: {', '.join(CLASSIFIERS)}")
    if kind == "logistic":
        from sklearn.linear_model import LogisticRegression
        clf = LogisticRegression(max_iter=2000, random_state=seed)
    else:
        from sklearn.svm import SVC
        clf = SVC(kernel="rbf", random_state=seed)
    return clf.fit(features.cpu().numpy(), y.cpu().numpy())


class SupervisedClassifier(nn.Module):
    """The supervised-only baseline of the few-labels table: M2's classifier
    network ``q(y|x)`` (an MLP) trained by cross-entropy on the labelled
    images alone, with Adam and full-batch steps.

    Example:
        >>> clf = SupervisedClassifier(x_dim=4, y_dim=2, hidden=(8,))
        >>> x = torch.randn(40, 4); y = (x[:, 0] > 0).long()
        >>> clf = clf.fit(x, y, steps=200)
        >>> float(classification_error(clf, x, y)) < 0.2
        True
    """

    def __init__(self, x_dim: int, y_dim: int = 10, hidden: Sequence[int] = (500,),
                 activation: str = "softplus"):
        super().__init__()
        self.x_dim, self.y_dim = x_dim, y_dim
        self.net = mlp(x_dim, hidden, y_dim, activation)

    def fit(self, x: torch.Tensor, y: torch.Tensor, steps: int = 2000, lr: float = 1e-3,
            weight_decay: float = 1e-4, seed: int = 0) -> "SupervisedClassifier":
        """``steps`` full-batch Adam steps on the mean cross-entropy; returns ``self``."""
        check_x(self, x, self.x_dim)
        check_labels(y, self.y_dim, x.shape[0])
        torch.manual_seed(seed)
        opt = torch.optim.Adam(self.net.parameters(), lr=lr, weight_decay=weight_decay)
        for _ in range(steps):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(self.net(x), y).backward()
            opt.step()
        return self

    @torch.no_grad()
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """The predicted class ``argmax_y`` of the network's logits, shape ``(batch,)``."""
        check_x(self, x, self.x_dim)
        return self.net(x).argmax(-1)


@torch.no_grad()
def classification_error(module: nn.Module, x: torch.Tensor, y: torch.Tensor,
                         batch_size: int = 2000) -> torch.Tensor:
    """The fraction of ``x`` that ``module.classify`` labels wrongly (a 0-d
    tensor), in batches of ``batch_size`` images."""
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(f"need as many labels as images (> 0); got {x.shape[0]} images, "
                         f"{y.shape[0]} labels")
    wrong = sum(int((module.classify(x[i:i + batch_size]) != y[i:i + batch_size].to(x.device)).sum())
                for i in range(0, x.shape[0], batch_size))
    return torch.tensor(wrong / x.shape[0])
