r"""The semi-supervised generative model M2 and the stacked M1+M2.

Kingma, Rezende, Mohamed & Welling, "Semi-supervised Learning with Deep
Generative Models", 2014, arXiv:1406.5298, sections 3.2 and 3.3:

.. math:: p(y)\, p(z)\, p(x|y, z), \qquad q(y|x)\, q(z|x, y),

with M1+M2 the same model on M1's latent features in place of the images.
:class:`M1M2` is built on :class:`M2`: its model and guide run M2's sites on
M1's latent ``z`` (with ``"z2"`` for M2's style latent), so the two share one
implementation of the semi-supervised structure.

The label ``y`` of M2 is a class index (``LongTensor`` of shape ``(batch,)``).
``model(x, y)`` and ``guide(x, y)`` condition on it; ``model(x)`` and
``guide(x)`` marginalize it: the guide's ``"y"`` site is marked
``infer={"enumerate": "parallel"}``, so that :class:`pyro.infer.TraceEnum_ELBO`
(``max_plate_nesting=1``; :class:`pyro_deepgen.infer.EnumELBO`) sums over the
classes exactly instead of sampling. Under any other objective or evaluator
(which do not enumerate) the site is sampled from ``q(y|x)``, which keeps, e.g.,
the IWAE estimate of ``log p(x)`` of :func:`pyro_deepgen.evaluate.log_likelihood`
valid.
"""

from __future__ import annotations

from typing import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn.functional import one_hot

from pyro_deepgen.infer.iwae import log_mean_exp
from pyro_deepgen.models._common import (cat, check_binary, check_likelihood, check_x, mlp, normal_net,
                                          observation_dist, out_dim)
from pyro_deepgen.models.classifiers import check_labels
from pyro_deepgen.models.m1 import M1

__all__ = ["M1M2", "M2"]


def _check_inputs(module: nn.Module, x: torch.Tensor, y: torch.Tensor | None) -> None:
    """``x`` of shape ``(batch, module.x_dim)`` and, when given, ``y`` of
    ``batch`` class indices in ``[0, module.y_dim)``."""
    check_x(module, x, module.x_dim)
    if y is not None:
        check_labels(y, module.y_dim, x.shape[0])


class M2(nn.Module):
    r"""The semi-supervised generative model M2 of Kingma, Rezende, Mohamed &
    Welling, "Semi-supervised Learning with Deep Generative Models", 2014,
    arXiv:1406.5298:

    .. math:: p(y) = \mathrm{Cat}(1/K), \quad p(z) = \mathcal{N}(0, I), \quad
              p(x|y, z) \text{ a decoder network}, \qquad
              q(y|x)\, q(z|x, y) \text{ the guide.}

    ``model(x, y)``/``guide(x, y)`` with labels condition on ``y``: the bound
    is the paper's :math:`-\mathcal{L}(x, y)`. ``model(x)``/``guide(x)`` without
    labels leave ``y`` latent; the guide's ``"y"`` site is enumerated in
    parallel, so with :class:`pyro.infer.TraceEnum_ELBO` (``max_plate_nesting=1``)
    the bound is exactly
    :math:`-\mathcal{U}(x) = \sum_y q(y|x)(-\mathcal{L}(x, y)) + \mathcal{H}(q(y|x))`,
    never a sampled estimate.

    The classification term :math:`\alpha\, \mathbb{E}[-\log q(y|x)]` on
    labelled data is a ``pyro.factor("y_aux", -alpha * log q(y|x))`` in the
    guide when labels are given. A guide factor enters the ELBO with a minus
    sign (as ``log q`` does), so the loss gains :math:`-\alpha \log q(y|x)`,
    while the bound that the evaluators compute (which skips observed guide
    sites) stays the model's. The factor is marked ``has_rsample=True``: its
    gradient is the plain derivative of a function of the data, with no
    score-function term.

    Sites: ``"y"``, ``"z"`` and ``"x"`` under ``pyro.plate("data", dim=-1)``;
    the model registers ``name.decoder``, the guide ``name.encoder`` (the
    classifier ``q(y|x)`` and the ``z`` encoder).

    :param x_dim: number of features of x.
    :param y_dim: number of classes.
    :param z_dim: latent dimension.
    :param hidden: hidden widths of the classifier and the ``z`` encoder; the
        decoder mirrors them. The paper used one layer of 500 softplus units.
    :param likelihood: ``"bernoulli"`` or ``"gaussian"`` (e.g. on M1's features).
    :param alpha: the weight of the classification term, per labelled datapoint.
    :param activation: hidden nonlinearity.

    Example:
        >>> import pyro
        >>> from pyro.infer import SVI
        >>> from pyro_deepgen.infer import EnumELBO
        >>> m2 = M2(x_dim=64, y_dim=3, z_dim=2, hidden=(32,), alpha=10.0)
        >>> svi = SVI(m2.model, m2.guide, pyro.optim.Adam({"lr": 1e-3}), EnumELBO())
        >>> x = torch.bernoulli(torch.full((8, 64), 0.5))
        >>> loss = svi.step(x)                                  # y enumerated
        >>> loss = svi.step(x, torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]))  # y observed
        >>> m2.classify(x).shape
        torch.Size([8])
    """

    #: the site of the continuous style latent, whose KL
    #: :class:`EnumELBO(kl_weights=...) <pyro_deepgen.infer.EnumELBO>` may weight
    style_site = "z"

    def __init__(
        self,
        x_dim: int,
        y_dim: int = 10,
        z_dim: int = 50,
        hidden: Sequence[int] = (500,),
        likelihood: str = "bernoulli",
        alpha: float = 50.0,
        activation: str = "softplus",
        name: str = "m2",
    ):
        super().__init__()
        check_likelihood(likelihood)
        if x_dim < 1 or z_dim < 1 or y_dim < 2:
            raise ValueError(f"M2 needs x_dim >= 1, z_dim >= 1 and y_dim >= 2; "
                             f"got x_dim={x_dim}, y_dim={y_dim}, z_dim={z_dim}")
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0; got {alpha}")
        hidden = tuple(int(h) for h in hidden)
        if not hidden:
            raise ValueError("M2 needs at least one hidden layer")
        self.x_dim, self.y_dim, self.z_dim = x_dim, y_dim, z_dim
        self.hidden, self.likelihood, self.alpha, self.name = hidden, likelihood, float(alpha), name
        self.encoder = nn.ModuleDict({
            "classifier": mlp(x_dim, hidden, y_dim, activation),
            "z": normal_net(x_dim + y_dim, hidden, z_dim, activation),
        })
        self.decoder = mlp(z_dim + y_dim, tuple(reversed(hidden)), out_dim(x_dim, likelihood), activation)

    def _one_hot(self, y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return one_hot(y, self.y_dim).to(like.dtype)

    def likelihood_dist(self, z: torch.Tensor, y: torch.Tensor) -> dist.TorchDistribution:
        """``p(x|y, z)`` for class indices ``y`` (broadcast against ``z``'s batch shape)."""
        return observation_dist(self.decoder(cat(z, self._one_hot(y, z))), self.likelihood)

    def classifier_dist(self, x: torch.Tensor) -> dist.Categorical:
        """``q(y|x)``."""
        return dist.Categorical(logits=self.encoder["classifier"](x))

    def z_dist(self, x: torch.Tensor, y: torch.Tensor) -> dist.TorchDistribution:
        """``q(z|x, y)``, event shape ``(z_dim,)``."""
        loc, scale = self.encoder["z"](cat(x, self._one_hot(y, x)))
        return dist.Normal(loc, scale).to_event(1)

    def _model_sites(self, like: torch.Tensor, y: torch.Tensor | None, data: torch.Tensor | None,
                     style_site: str = "z", data_site: str = "x") -> torch.Tensor:
        """M2's generative sites, inside the caller's data plate: ``y ~ Cat(1/K)``
        (observed when given), ``style_site ~ N(0, I)`` and ``data_site ~ p(x|y, z)``
        (observed ``data`` when given, else latent); returns the value of
        ``data_site``. ``like`` (a batch of M2's inputs) gives dtype and device."""
        y = pyro.sample("y", dist.Categorical(logits=like.new_zeros(self.y_dim)), obs=y)
        z = pyro.sample(style_site, dist.Normal(like.new_zeros(self.z_dim), 1.0).to_event(1))
        return pyro.sample(data_site, self.likelihood_dist(z, y), obs=data)

    def _guide_sites(self, x: torch.Tensor, y: torch.Tensor | None, style_site: str = "z") -> None:
        """M2's guide sites for inputs ``x``, inside the caller's data plate: without
        ``y``, ``y ~ q(y|x)`` (enumerated); with ``y``, the classification factor
        ``"y_aux"``. Then ``style_site ~ q(z|x, y)``."""
        q_y = self.classifier_dist(x)
        if y is None:
            y = pyro.sample("y", q_y, infer={"enumerate": "parallel"})
        elif self.alpha > 0:
            pyro.factor("y_aux", -self.alpha * q_y.log_prob(y), has_rsample=True)
        pyro.sample(style_site, self.z_dist(x, y))

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """``y ~ Cat(1/K)`` (observed when given), ``z ~ N(0, I)``, ``x ~ p(x|y, z)``."""
        _check_inputs(self, x, y)
        check_binary(self, x, self.likelihood)
        pyro.module(f"{self.name}.decoder", self.decoder)
        with pyro.plate("data", x.shape[0], dim=-1):
            self._model_sites(x, y, data=x)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """Without ``y``: ``y ~ q(y|x)`` (enumerated); with ``y``: the
        classification factor. Then ``z ~ q(z|x, y)``."""
        _check_inputs(self, x, y)
        pyro.module(f"{self.name}.encoder", self.encoder)
        with pyro.plate("data", x.shape[0], dim=-1):
            self._guide_sites(x, y)

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """``q(y|x)`` as probabilities, shape ``(batch, y_dim)``."""
        check_x(self, x, self.x_dim)
        return self.classifier_dist(x).probs

    @torch.no_grad()
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """The guide's label prediction ``argmax_y q(y|x)``, shape ``(batch,)``."""
        check_x(self, x, self.x_dim)
        return self.encoder["classifier"](x).argmax(-1)

    @torch.no_grad()
    def class_log_likelihood(self, x: torch.Tensor, num_samples: int = 1) -> torch.Tensor:
        r"""For every class ``y``, the importance-weighted bound on ``log p(x|y)``
        with ``num_samples`` draws from ``q(z|x, y)``:
        :math:`\log \frac{1}{K}\sum_k p(x|y, z_k)\, p(z_k) / q(z_k|x, y)`
        (the ELBO of ``x`` with label ``y`` at ``K = 1``). Shape ``(batch, y_dim)``.

        Its argmax over ``y`` (:meth:`generative_classify`) classifies with the
        generative model instead of ``q(y|x)``: an error near chance shows a
        decoder that ignores ``y``; one close to the classifier's, a generative
        model whose classes agree with ``q(y|x)``, right or wrong."""
        check_x(self, x, self.x_dim)
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1; got {num_samples}")
        y = torch.arange(self.y_dim, device=x.device).expand(x.shape[0], -1)  # (batch, y_dim)
        xs = x[:, None, :].expand(-1, self.y_dim, -1)
        q = self.z_dist(xs, y)
        z = q.sample((num_samples,))  # (K, batch, y_dim, z_dim)
        prior = dist.Normal(torch.zeros_like(z), 1.0).to_event(1)
        log_w = self.likelihood_dist(z, y).log_prob(xs) + prior.log_prob(z) - q.log_prob(z)
        return log_mean_exp(log_w)

    @torch.no_grad()
    def generative_classify(self, x: torch.Tensor, num_samples: int = 1) -> torch.Tensor:
        """``argmax_y`` of :meth:`class_log_likelihood` (``p(y)`` is uniform), shape ``(batch,)``."""
        return self.class_log_likelihood(x, num_samples).argmax(-1)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The mean of ``p(x|y, z)``."""
        return self.likelihood_dist(z, y).mean

    @torch.no_grad()
    def sample(self, n: int, y: torch.Tensor | None = None) -> torch.Tensor:
        """Means of ``p(x|y, z)`` for ``n`` prior draws of ``z`` (and of ``y`` unless given)."""
        p = next(self.parameters())
        if y is None:
            y = torch.randint(0, self.y_dim, (n,), device=p.device)
        z = torch.randn(n, self.z_dim, device=p.device, dtype=p.dtype)
        return self.decode(z, y)

    @torch.no_grad()
    def analogies(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The paper's "style and analogies": the style ``z = E_q[z|x, y]`` of each
        image (``y`` its label, default the guide's prediction), decoded with every
        class. Returns decoder means of shape ``(batch, y_dim, x_dim)``."""
        check_x(self, x, self.x_dim)
        y = self.classify(x) if y is None else y
        check_labels(y, self.y_dim, x.shape[0])
        z = self.z_dist(x, y).mean  # (batch, z_dim)
        classes = torch.arange(self.y_dim, device=x.device)
        return self.decode(z[:, None, :], classes[None, :].expand(x.shape[0], -1))


class M1M2(nn.Module):
    r"""The stacked model M1+M2 of Kingma, Rezende, Mohamed & Welling,
    "Semi-supervised Learning with Deep Generative Models", 2014, arXiv:1406.5298:

    .. math:: p(y)\, p(z_2)\, p(z|y, z_2)\, p(x|z), \qquad
              q(z|x)\, q(y|z)\, q(z_2|z, y),

    where ``p(x|z)``/``q(z|x)`` are M1 (a VAE, trained first and then frozen)
    and ``p(z|y, z_2)`` with its guide is an :class:`M2` with a Gaussian
    likelihood on M1's latent ``z``. Training M1 first and then the M2 part,
    with ``z`` drawn from the frozen ``q(z|x)``, is the paper's scheme.

    The two stages: :attr:`pretrain` (an :class:`M1`, trained with any ELBO on
    the images) and then ``model``/``guide`` (with ``TraceEnum_ELBO``), which
    register only M2's networks (``name.m2.encoder``, ``name.m2.decoder``), so
    that M1 stays fixed. :func:`pyro_deepgen.experiment.train_run` runs both.

    Sites: ``"z"`` (M1's latent, next to x), ``"y"``, ``"z2"`` (M2's latent) and ``"x"``.

    :param z1_dim: M1's latent size (M2's input).
    :param z_dim: M2's latent size.
    :param m1_hidden: M1's hidden widths; ``hidden`` are M2's.

    Example:
        >>> import pyro
        >>> from pyro.infer import SVI, Trace_ELBO
        >>> from pyro_deepgen.infer import EnumELBO
        >>> m = M1M2(x_dim=64, y_dim=3, z1_dim=4, z_dim=2, m1_hidden=(32,), hidden=(16,))
        >>> x = torch.bernoulli(torch.full((8, 64), 0.5))
        >>> m1 = m.pretrain
        >>> loss = SVI(m1.model, m1.guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO()).step(x)
        >>> svi = SVI(m.model, m.guide, pyro.optim.Adam({"lr": 1e-3}), EnumELBO())
        >>> loss = svi.step(x, torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]))
        >>> loss = svi.step(x)
        >>> m.classify(x).shape
        torch.Size([8])
    """

    #: M2's style latent (M2's ``"z"``; here ``"z"`` is M1's latent, M2's data)
    style_site = "z2"

    def __init__(
        self,
        x_dim: int,
        y_dim: int = 10,
        z1_dim: int = 50,
        z_dim: int = 50,
        m1_hidden: Sequence[int] = (600, 600),
        hidden: Sequence[int] = (500,),
        likelihood: str = "bernoulli",
        alpha: float = 50.0,
        activation: str = "softplus",
        name: str = "m1m2",
    ):
        super().__init__()
        self.pretrain = M1(x_dim, z1_dim, m1_hidden, likelihood, activation, name=f"{name}.m1")
        self.m2 = M2(z1_dim, y_dim, z_dim, hidden, "gaussian", alpha, activation, name=f"{name}.m2")
        self.x_dim, self.y_dim, self.z1_dim, self.z_dim, self.name = x_dim, y_dim, z1_dim, z_dim, name
        self.likelihood = likelihood

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """M2's model with ``z2`` for its style and M1's latent ``z`` for its data
        (``y``, ``z2 ~ N(0, I)``, ``z ~ p(z|y, z2)``), then ``x ~ p(x|z)`` (frozen M1)."""
        _check_inputs(self, x, y)
        pyro.module(f"{self.m2.name}.decoder", self.m2.decoder)
        with pyro.plate("data", x.shape[0], dim=-1):
            z = self.m2._model_sites(x, y, data=None, style_site=self.style_site, data_site="z")
            with torch.no_grad():
                px = self.pretrain.vae.likelihood_dist(z)
            pyro.sample("x", px, obs=x)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """``z ~ q(z|x)`` (frozen M1), then M2's guide on ``z`` (``y``, and ``z2 ~ q(z2|z, y)``)."""
        _check_inputs(self, x, y)
        pyro.module(f"{self.m2.name}.encoder", self.m2.encoder)
        with pyro.plate("data", x.shape[0], dim=-1):
            with torch.no_grad():
                q_z = self.pretrain.vae.guide_dist(x)
            z = pyro.sample("z", q_z)
            self.m2._guide_sites(z, y, style_site=self.style_site)

    @torch.no_grad()
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """M2's prediction on M1's features ``E_q[z|x]``."""
        return self.m2.classify(self.pretrain.features(x))

    @torch.no_grad()
    def sample(self, n: int, y: torch.Tensor | None = None) -> torch.Tensor:
        """Pixel means of ``p(x|z)`` at the means of ``p(z|y, z2)`` for prior draws."""
        return self.pretrain.vae.decode(self.m2.sample(n, y))
