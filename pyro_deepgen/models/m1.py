r"""The latent-feature discriminative model M1.

Kingma, Rezende, Mohamed & Welling, "Semi-supervised Learning with Deep
Generative Models", 2014, arXiv:1406.5298, section 3.1: a VAE

.. math:: p(z) = \mathcal N(0, I), \quad p(x|z), \qquad q(z|x),

trained on all images, labelled or not; a classifier of the labels is then fit
on the features :math:`\mathbb E_q[z|x]` of the labelled ones.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from pyro_deepgen.models._common import check_x
from pyro_deepgen.models.classifiers import CLASSIFIERS, check_labels, fit_sklearn
from pyro_deepgen.models.vae import VAE

__all__ = ["M1"]


class M1(nn.Module):
    r"""The latent-feature discriminative model M1 of Kingma, Rezende, Mohamed &
    Welling, "Semi-supervised Learning with Deep Generative Models", 2014,
    arXiv:1406.5298: a :class:`~pyro_deepgen.models.VAE` trained on all images
    (labels unused), whose guide means :math:`\mathbb{E}_q[z|x]` are the
    features of a classifier fit on the labelled images alone.

    The classifier is scikit-learn's: ``"logistic"`` (``LogisticRegression``,
    the default) or ``"svm"`` (``SVC`` with an RBF kernel). The paper used a
    transductive SVM, which scikit-learn lacks. The fitted classifier is not
    part of the state dict: call :meth:`fit_classifier` again after loading.

    ``model(x)``/``guide(x)`` are the VAE's (sites ``"z"``, ``"x"``); a label
    argument is accepted and ignored.

    Example:
        >>> import pyro
        >>> from pyro.infer import SVI, Trace_ELBO
        >>> m1 = M1(x_dim=64, z_dim=4, hidden=(32,))
        >>> x = torch.bernoulli(torch.full((20, 64), 0.5))
        >>> svi = SVI(m1.model, m1.guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
        >>> loss = svi.step(x)
        >>> m1.fit_classifier(x, torch.arange(20) % 2).classify(x).shape
        torch.Size([20])
    """

    def __init__(
        self,
        x_dim: int,
        z_dim: int = 50,
        hidden: Sequence[int] = (600, 600),
        likelihood: str = "bernoulli",
        activation: str = "softplus",
        classifier: str = "logistic",
        name: str = "m1",
    ):
        super().__init__()
        if classifier not in CLASSIFIERS:
            raise ValueError(f"unknown classifier {classifier!r}; valid: {', '.join(CLASSIFIERS)}")
        self.vae = VAE(x_dim, z_dim, hidden, likelihood, activation, name=name)
        self.x_dim, self.z_dim, self.classifier = x_dim, z_dim, classifier
        self.fitted_classifier = None

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """The VAE's model; ``y`` is ignored."""
        self.vae.model(x)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """The VAE's guide; ``y`` is ignored."""
        self.vae.guide(x)

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``E_q[z|x]``, shape ``(batch, z_dim)``."""
        check_x(self, x, self.x_dim)
        return self.vae.encoder(x)[0]

    def fit_classifier(self, x: torch.Tensor, y: torch.Tensor, seed: int = 0) -> "M1":
        """Fits the classifier on the features of the labelled ``x``; returns ``self``."""
        check_x(self, x, self.x_dim)
        check_labels(y, int(y.max()) + 1 if y.numel() else 1, x.shape[0])
        if len(torch.unique(y)) < 2:
            raise ValueError("fit_classifier needs labels of at least two classes")
        self.fitted_classifier = fit_sklearn(self.classifier, self.features(x), y, seed)
        return self

    @torch.no_grad()
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """The classifier's prediction on ``x``'s features."""
        if self.fitted_classifier is None:
            raise RuntimeError("M1.classify needs fit_classifier(x, y) first")
        pred = self.fitted_classifier.predict(self.features(x).cpu().numpy())
        return torch.as_tensor(pred, dtype=torch.long, device=x.device)

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """Means of ``p(x|z)`` for ``n`` prior draws of ``z`` (the VAE's)."""
        return self.vae.sample(n)
