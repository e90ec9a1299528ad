r"""Semi-supervised deep generative models: M1, M2 and the stacked M1+M2.

Kingma, Rezende, Mohamed & Welling, "Semi-supervised Learning with Deep
Generative Models", 2014, arXiv:1406.5298.

The label ``y`` of M2 is a class index (``LongTensor`` of shape ``(batch,)``).
``model(x, y)`` and ``guide(x, y)`` condition on it; ``model(x)`` and
``guide(x)`` marginalize it: the guide's ``"y"`` site is marked
``infer={"enumerate": "parallel"}``, so that :class:`pyro.infer.TraceEnum_ELBO`
(``max_plate_nesting=1``) sums over the classes exactly instead of sampling.
Under any other objective or evaluator (which do not enumerate) the site is
sampled from ``q(y|x)``, which keeps, e.g., the IWAE estimate of
``log p(x)`` of :func:`pyro_deepgen.evaluate.log_likelihood` valid.
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import TraceEnum_ELBO
from pyro.poutine.messenger import Messenger
from torch import nn
from torch.nn.functional import one_hot

from pyro_deepgen.infer.iwae import log_mean_exp
from pyro_deepgen.models._common import (
    cat,
    check_binary,
    check_likelihood,
    check_x,
    mlp,
    normal_net,
    observation_dist,
    out_dim,
)
from pyro_deepgen.models.vae import VAE

__all__ = ["M1", "M2", "M1M2", "EnumELBO", "SupervisedClassifier", "classification_error", "check_labels"]

CLASSIFIERS = ("logistic", "svm")


def check_labels(y: torch.Tensor, y_dim: int, batch: int | None = None, who: str = "labels") -> None:
    """Raises a ``ValueError`` unless ``y`` is an integer tensor of class
    indices in ``[0, y_dim)`` (of shape ``(batch,)`` when ``batch`` is given)."""
    if not torch.is_tensor(y) or y.dtype.is_floating_point or y.dtype == torch.bool or y.dim() != 1:
        what = f"{y.dtype} tensor of shape {tuple(y.shape)}" if torch.is_tensor(y) else type(y).__name__
        raise ValueError(f"{who} must be a 1-D integer tensor of class indices; got a {what}")
    if batch is not None and y.shape[0] != batch:
        raise ValueError(f"{who} has {y.shape[0]} entries but x has {batch} rows")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= y_dim):
        bad = int(y.min()) if int(y.min()) < 0 else int(y.max())
        raise ValueError(f"{who} must be in [0, {y_dim}) (y_dim={y_dim}); got {bad}")


class _SiteScale(Messenger):
    """Multiplies the log density of the named sites by their factor, in
    whichever program (model or guide) it wraps."""

    def __init__(self, scales: dict[str, float]):
        super().__init__()
        self.scales = scales

    def _process_message(self, msg: dict) -> None:
        if msg["name"] in self.scales:
            msg["scale"] = self.scales[msg["name"]] * msg["scale"]


class EnumELBO(TraceEnum_ELBO):
    r""":class:`pyro.infer.TraceEnum_ELBO` with ``max_plate_nesting=1`` (the
    pyro_deepgen convention), which trains :class:`M2` and :class:`M1M2` on
    labelled and unlabelled batches alike: it sums exactly over the guide's
    enumerated labels, and on a labelled batch (nothing to enumerate) it is
    the plain ELBO, without ``TraceEnum_ELBO``'s warning about that.

    ``kl_weights`` maps latent sites to a factor :math:`\beta` on their KL term:
    both ``log p`` and ``log q`` of such a site are multiplied by it, so the
    bound's :math:`\mathrm{KL}(q(z|x, y)\,\|\,p(z))` becomes
    :math:`\beta\,\mathrm{KL}` (Higgins et al., "beta-VAE: Learning Basic Visual
    Concepts with a Constrained Variational Framework", ICLR 2017). On M2's
    style latent (``{"z": beta}``, :attr:`M2.style_site`) with :math:`\beta > 1`
    this makes the label, whose KL is at most :math:`\log K`, the cheaper
    carrier of the class. The loss is then no longer a bound on
    :math:`-\log p(x)`; evaluate with the model alone (e.g.
    :func:`pyro_deepgen.evaluate.elbo`), which never sees these weights.

    Example:
        >>> m2 = M2(x_dim=4, y_dim=2, z_dim=1, hidden=(3,))
        >>> loss = EnumELBO().loss(m2.model, m2.guide, torch.ones(5, 4), torch.zeros(5, dtype=torch.long))
        >>> loss = EnumELBO(kl_weights={"z": 3.0}).loss(m2.model, m2.guide, torch.ones(5, 4))
    """

    def __init__(self, num_particles: int = 1, max_plate_nesting: int = 1,
                 kl_weights: dict[str, float] | None = None, **kwargs):
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting,
                         vectorize_particles=kwargs.pop("vectorize_particles", True), **kwargs)
        kl_weights = dict(kl_weights or {})
        for site, w in kl_weights.items():
            if not (isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w >= 0):
                raise ValueError(f"the KL weight of site {site!r} must be a finite number >= 0; got {w!r}")
        self.kl_weights = {k: float(w) for k, w in kl_weights.items() if w != 1}

    def _get_trace(self, model, guide, args, kwargs):
        if self.kl_weights:
            model, guide = _SiteScale(self.kl_weights)(model), _SiteScale(self.kl_weights)(guide)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="TraceEnum_ELBO found no sample sites")
            trace_pair = super()._get_trace(model, guide, args, kwargs)
        if self.kl_weights:
            for trace in trace_pair:
                missing = set(self.kl_weights) - set(trace.nodes)
                if missing:
                    raise ValueError(f"kl_weights names sites that the model and guide lack: "
                                     f"{', '.join(sorted(missing))}")
        return trace_pair


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
        >>> m2 = M2(x_dim=64, y_dim=3, z_dim=2, hidden=(32,), alpha=10.0)
        >>> svi = SVI(m2.model, m2.guide, pyro.optim.Adam({"lr": 1e-3}), EnumELBO())
        >>> x = torch.bernoulli(torch.full((8, 64), 0.5))
        >>> loss = svi.step(x)                                  # y enumerated
        >>> loss = svi.step(x, torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]))  # y observed
        >>> m2.classify(x).shape
        torch.Size([8])
    """

    #: the site of the continuous style latent, whose KL ``EnumELBO(kl_weights=...)`` may weight
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

    def _check(self, x: torch.Tensor, y: torch.Tensor | None) -> None:
        check_x(self, x, self.x_dim)
        if y is not None:
            check_labels(y, self.y_dim, x.shape[0])

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

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """``y ~ Cat(1/K)`` (observed when given), ``z ~ N(0, I)``, ``x ~ p(x|y, z)``."""
        self._check(x, y)
        check_binary(self, x, self.likelihood)
        pyro.module(f"{self.name}.decoder", self.decoder)
        with pyro.plate("data", x.shape[0], dim=-1):
            y = pyro.sample("y", dist.Categorical(logits=x.new_zeros(self.y_dim)), obs=y)
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
            pyro.sample("x", self.likelihood_dist(z, y), obs=x)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """Without ``y``: ``y ~ q(y|x)`` (enumerated); with ``y``: the
        classification factor. Then ``z ~ q(z|x, y)``."""
        self._check(x, y)
        pyro.module(f"{self.name}.encoder", self.encoder)
        with pyro.plate("data", x.shape[0], dim=-1):
            q_y = self.classifier_dist(x)
            if y is None:
                y = pyro.sample("y", q_y, infer={"enumerate": "parallel"})
            elif self.alpha > 0:
                pyro.factor("y_aux", -self.alpha * q_y.log_prob(y), has_rsample=True)
            pyro.sample("z", self.z_dist(x, y))

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


def _fit_sklearn(kind: str, features: torch.Tensor, y: torch.Tensor, seed: int):
    if kind == "logistic":
        from sklearn.linear_model import LogisticRegression
        clf = LogisticRegression(max_iter=2000, random_state=seed)
    else:
        from sklearn.svm import SVC
        clf = SVC(kernel="rbf", random_state=seed)
    return clf.fit(features.cpu().numpy(), y.cpu().numpy())


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
        self.fitted_classifier = _fit_sklearn(self.classifier, self.features(x), y, seed)
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
        return self.vae.sample(n)


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

    def _check(self, x: torch.Tensor, y: torch.Tensor | None) -> None:
        check_x(self, x, self.x_dim)
        if y is not None:
            check_labels(y, self.y_dim, x.shape[0])

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """``y``, ``z2 ~ N(0, I)``, ``z ~ p(z|y, z2)`` (M2), ``x ~ p(x|z)`` (frozen M1)."""
        self._check(x, y)
        m2 = self.m2
        pyro.module(f"{m2.name}.decoder", m2.decoder)
        with pyro.plate("data", x.shape[0], dim=-1):
            y = pyro.sample("y", dist.Categorical(logits=x.new_zeros(self.y_dim)), obs=y)
            z2 = pyro.sample("z2", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
            z = pyro.sample("z", m2.likelihood_dist(z2, y))
            with torch.no_grad():
                px = self.pretrain.vae.likelihood_dist(z)
            pyro.sample("x", px, obs=x)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """``z ~ q(z|x)`` (frozen M1), then M2's guide on ``z``."""
        self._check(x, y)
        m2 = self.m2
        pyro.module(f"{m2.name}.encoder", m2.encoder)
        with pyro.plate("data", x.shape[0], dim=-1):
            with torch.no_grad():
                q_z = self.pretrain.vae.guide_dist(x)
            z = pyro.sample("z", q_z)
            q_y = m2.classifier_dist(z)
            if y is None:
                y = pyro.sample("y", q_y, infer={"enumerate": "parallel"})
            elif m2.alpha > 0:
                pyro.factor("y_aux", -m2.alpha * q_y.log_prob(y), has_rsample=True)
            pyro.sample("z2", m2.z_dist(z, y))

    @torch.no_grad()
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """M2's prediction on M1's features ``E_q[z|x]``."""
        return self.m2.classify(self.pretrain.features(x))

    @torch.no_grad()
    def sample(self, n: int, y: torch.Tensor | None = None) -> torch.Tensor:
        """Pixel means of ``p(x|z)`` at the means of ``p(z|y, z2)`` for prior draws."""
        return self.pretrain.vae.decode(self.m2.sample(n, y))


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
        check_x(self, x, self.x_dim)
        return self.net(x).argmax(-1)


@torch.no_grad()
def classification_error(module: nn.Module, x: torch.Tensor, y: torch.Tensor,
                         batch_size: int = 2000) -> torch.Tensor:
    """The fraction of ``x`` that ``module.classify`` labels wrongly (a 0-d tensor)."""
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(f"need as many labels as images (> 0); got {x.shape[0]} images, "
                         f"{y.shape[0]} labels")
    wrong = sum(int((module.classify(x[i:i + batch_size]) != y[i:i + batch_size].to(x.device)).sum())
                for i in range(0, x.shape[0], batch_size))
    return torch.tensor(wrong / x.shape[0])
