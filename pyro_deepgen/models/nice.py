r"""Exact-likelihood flow models (NICE, RealNVP), with dequantization, bits/dim and inpainting.

A flow model is a bijection ``f`` from data ``x`` to a latent ``z = f(x)`` with a
factorized prior ``p_Z``; its density is given by the change of variables,

.. math:: \log p(x) = \log p_Z(f(x)) + \log |\det \partial f(x) / \partial x|.

Following Pyro, each layer is a :class:`~pyro.distributions.torch_transform.TransformModule`
whose forward direction is the *generative* one (``z -> x``), so the layers also
compose with Pyro's ``TransformedDistribution``. Pyro has an ``AffineCoupling``,
but its results are cached by tensor identity (scoring the same tensor after a
parameter update returns the stale value and graph) and it needs ``Permute``
layers, whose index tensor does not follow ``.to(device)``; the couplings here
partition by parity with device-following buffers, keep no cache, and return the
inverse together with its log-determinant, so that ``log_prob`` evaluates each
network once.

Dequantization and bits/dim. 8-bit pixel levels ``k`` in ``{0, ..., 255}`` (stored
as integers, or as ``k / 255`` in [0, 1] as :func:`pyro_deepgen.data.load_dataset`
returns them) are dequantized to ``y = (k + u) / 256`` with ``u ~ U[0, 1)^D``, a
point of the bin ``[k/256, (k+1)/256)^D`` of the unit cube. For a density ``p`` on
that cube, the discrete model ``P(k) = \int_{bin} p(y) dy`` satisfies (Jensen)

.. math:: \log P(k) \ge \mathbb E_u[\log p((k + u) / 256)] - D \log 256,

and :func:`bits_per_dim` reports ``-(\log p(y) - D \log 256) / (D \log 2)``: with
``log p(y)`` averaged over draws of ``u`` this is an upper bound on the discrete
negative log-likelihood in bits per dimension (Theis, van den Oord & Bethge 2016,
arXiv:1511.01844).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import TorchDistribution, constraints
from pyro.distributions.torch_transform import TransformModule
from torch import nn
from torch.utils.data import TensorDataset

from pyro_deepgen.nn import MLP

__all__ = [
    "PRIORS",
    "AdditiveCoupling",
    "AffineCoupling",
    "DiagonalScale",
    "FlowDistribution",
    "FlowModel",
    "NICE",
    "RealNVP",
    "Inpainting",
    "inpaint",
    "dequantize",
    "DequantizedDataset",
    "bits_per_dim",
]

PRIORS = ("logistic", "gaussian")
_VECTOR = constraints.independent(constraints.real, 1)


def _inverse_chain(transforms: Sequence, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Runs ``transforms`` (generative order) backwards from ``x``: returns ``z`` and
    ``log|det dz/dx|``. Layers with ``inverse_with_log_det`` evaluate their network once;
    other bijective Pyro transforms of event dim 1 go through ``inv`` and
    ``log_abs_det_jacobian``."""
    log_det = x.new_zeros(x.shape[:-1])
    for t in reversed(list(transforms)):
        if hasattr(t, "inverse_with_log_det"):
            x, ld = t.inverse_with_log_det(x)
        else:
            prev = t.inv(x)
            ld = -t.log_abs_det_jacobian(prev, x)
            x = prev
        log_det = log_det + ld
    return x, log_det


class _Coupling(TransformModule):
    """Pixels of one parity (``cond``) pass unchanged and feed a network that
    transforms the others (``rest``)."""

    bijective = True
    domain = _VECTOR
    codomain = _VECTOR

    def __init__(self, x_dim: int, parity: int, outputs_per_pixel: int, hidden: Sequence[int],
                 activation: str):
        super().__init__(cache_size=0)
        if x_dim < 2 or parity not in (0, 1):
            raise ValueError(f"a coupling needs x_dim >= 2 and parity 0 or 1; got x_dim={x_dim}, "
                             f"parity={parity}")
        idx = torch.arange(x_dim)
        cond, rest = idx[idx % 2 == parity], idx[idx % 2 != parity]
        self.register_buffer("cond", cond, persistent=False)
        self.register_buffer("rest", rest, persistent=False)
        self.net = MLP(len(cond), tuple(hidden), outputs_per_pixel * len(rest), activation)
        # A zero output layer starts the flow at the identity.
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def _net(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.index_select(-1, self.cond))

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        return self.inverse_with_log_det(y)[0]

    def inverse_with_log_det(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class AdditiveCoupling(_Coupling):
    r"""NICE's additive coupling layer, ``y_rest = x_rest + m(x_cond)``, ``y_cond = x_cond``,
    where ``cond`` are the indices of parity ``parity`` and ``m`` an MLP; volume preserving
    (``log|det J| = 0``).

    Dinh, Krueger & Bengio, "NICE: Non-linear Independent Components Estimation",
    2014, arXiv:1410.8516, Sec. 3.

    Example:
        >>> t = AdditiveCoupling(4, parity=0, hidden=(8,))
        >>> x = torch.randn(3, 4)
        >>> torch.allclose(t.inv(t(x)), x)
        True
    """

    volume_preserving = True

    def __init__(self, x_dim: int, parity: int = 0, hidden: Sequence[int] = (1000,) * 5,
                 activation: str = "relu"):
        super().__init__(x_dim, parity, 1, hidden, activation)

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_add(-1, self.rest, self._net(x))

    def inverse_with_log_det(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x = f^{-1}(y)`` and ``log|det dx/dy|`` (zero)."""
        return y.index_add(-1, self.rest, -self._net(y)), y.new_zeros(y.shape[:-1])

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(x.shape[:-1])


class AffineCoupling(_Coupling):
    r"""RealNVP's affine coupling layer, ``y_rest = x_rest * exp(s(x_cond)) + t(x_cond)``,
    ``y_cond = x_cond``, with ``s = a * tanh(raw)`` (``a`` a learned per-pixel scale, which
    keeps early training stable) and ``raw, t`` from one MLP; ``log|det J| = sum s``.

    Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", 2017,
    arXiv:1605.08803, Sec. 3.3 (here on flat vectors, with an odd/even mask).

    Example:
        >>> t = AffineCoupling(4, parity=1, hidden=(8,))
        >>> x = torch.randn(3, 4)
        >>> t.log_abs_det_jacobian(x, t(x)).shape
        torch.Size([3])
    """

    def __init__(self, x_dim: int, parity: int = 0, hidden: Sequence[int] = (512, 512),
                 activation: str = "relu"):
        super().__init__(x_dim, parity, 2, hidden, activation)
        self.scale = nn.Parameter(torch.ones(len(self.rest)))

    def _params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw, shift = self._net(x).chunk(2, dim=-1)
        return self.scale * torch.tanh(raw), shift

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        s, t = self._params(x)
        return x.index_copy(-1, self.rest, x.index_select(-1, self.rest) * s.exp() + t)

    def inverse_with_log_det(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x = f^{-1}(y)`` and ``log|det dx/dy| = -sum s``."""
        s, t = self._params(y)
        x_rest = (y.index_select(-1, self.rest) - t) * torch.exp(-s)
        return y.index_copy(-1, self.rest, x_rest), -s.sum(-1)

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self._params(x)[0].sum(-1)


class DiagonalScale(TransformModule):
    r"""Elementwise scaling ``y = x * exp(s)`` with a learned ``s`` (NICE's diagonal
    scaling layer, Sec. 3.3 of arXiv:1410.8516); ``log|det J| = sum s``.

    Example:
        >>> t = DiagonalScale(3)
        >>> t.log_abs_det_jacobian(torch.ones(2, 3), t(torch.ones(2, 3)))
        tensor([0., 0.], grad_fn=<ExpandBackward0>)
    """

    bijective = True
    domain = _VECTOR
    codomain = _VECTOR

    def __init__(self, x_dim: int):
        super().__init__(cache_size=0)
        self.log_scale = nn.Parameter(torch.zeros(x_dim))

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.log_scale.exp()

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y * torch.exp(-self.log_scale)

    def inverse_with_log_det(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._inverse(y), (-self.log_scale.sum()).expand(y.shape[:-1])

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.log_scale.sum().expand(x.shape[:-1])


class _StandardLogistic(dist.Logistic):
    """Pyro's Logistic, sampled with ``u`` kept off 0 and 1 (``logit(0) = -inf``)."""

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        u = self.loc.new_empty(self._extended_shape(sample_shape)).uniform_()
        eps = torch.finfo(u.dtype).eps
        return self.icdf(u.clamp(eps, 1 - eps))


class FlowDistribution(TorchDistribution):
    r"""The density of ``x = T_K(...T_1(z))``, ``z ~ base`` (event dim 1): samples
    run the transforms forward, ``log_prob`` runs them backward once,
    ``log p(x) = log base(z) + log|det dz/dx|``.

    Unlike ``pyro.distributions.TransformedDistribution`` it keeps no cache,
    so scoring the same tensor after a parameter update is always fresh.

    Example:
        >>> base = dist.Normal(torch.zeros(2), torch.ones(2)).to_event(1)
        >>> d = FlowDistribution(base, [DiagonalScale(2)])
        >>> d.log_prob(torch.zeros(5, 2)).shape
        torch.Size([5])
    """

    arg_constraints: dict = {}
    support = _VECTOR
    has_rsample = True

    def __init__(self, base: TorchDistribution, transforms: Sequence, validate_args: bool | None = None):
        if len(base.event_shape) != 1:
            raise ValueError(f"FlowDistribution needs a base with event dim 1; got event shape "
                             f"{tuple(base.event_shape)}")
        self.base, self.transforms = base, list(transforms)
        super().__init__(base.batch_shape, base.event_shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None) -> "FlowDistribution":
        new = self._get_checked_instance(FlowDistribution, _instance)
        new.base = self.base.expand(batch_shape)
        new.transforms = self.transforms
        super(FlowDistribution, new).__init__(new.base.batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        x = self.base.rsample(sample_shape)
        for t in self.transforms:
            x = t(x)
        return x

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        z, log_det = _inverse_chain(self.transforms, value)
        return self.base.log_prob(z) + log_det


class Inpainting(NamedTuple):
    """What :func:`inpaint` returns: ``x`` (observed pixels as given, missing ones
    filled), ``log_prob`` (``(steps + 1, batch)``: ``log p`` before each step and at
    the end) and ``snapshots`` (``(step, x)`` pairs, for a progression plot)."""

    x: torch.Tensor
    log_prob: torch.Tensor
    snapshots: list[tuple[int, torch.Tensor]]


def inpaint(
    flow: nn.Module | Callable,
    x: torch.Tensor,
    mask: torch.Tensor,
    steps: int = 300,
    lr: float = 0.03,
    noise: float = 0.0,
    bounds: tuple[float, float] | None = (0.0, 1.0),
    init: str = "uniform",
    snapshots: int | Sequence[int] | None = None,
) -> Inpainting:
    r"""Fills the missing pixels of ``x`` by projected gradient ascent on ``log p(x)``
    over the missing pixels only, the observed ones held fixed, as in the inpainting
    experiments of NICE (arXiv:1410.8516, Sec. 5.2): the missing pixels start from
    uniform noise, each step follows the gradient (plus Gaussian noise of scale
    ``noise``, NICE's stochastic variant) with a step size decaying as
    :math:`\alpha_i = \mathrm{lr} \cdot 100 / (100 + i)`, then clips to ``bounds``.

    Unlike the paper's plain gradient steps, the steps are Adam's (a per-pixel scaling
    of the gradient): on dequantized 8-bit images the curvature of ``log p`` differs by
    orders of magnitude between pixels (border pixels have a spread of 1/256), and any
    plain step size that moves the smooth pixels makes the sharp ones diverge.

    :param flow: a model with ``log_prob(x)`` of shape ``(batch,)`` (e.g. :class:`NICE`),
        or such a function.
    :param x: ``(batch, D)``; the values at missing pixels are only used with ``init="given"``.
    :param mask: ``True``/1 marks a **missing** pixel (to fill), ``False``/0 an observed one;
        of shape ``(batch, D)`` or ``(D,)``.
    :param init: ``"uniform"``: missing pixels start from ``U(bounds)``; ``"given"``: from ``x``.
    :param snapshots: when to record ``x``: an int ``n``, every ``n`` steps (and at 0 and the
        end); a sequence, at those steps (0 is before the first step).

    Example:
        >>> flow = NICE(4, hidden=(8,))
        >>> mask = torch.tensor([1, 1, 0, 0], dtype=torch.bool)
        >>> out = inpaint(flow, torch.rand(2, 4), mask, steps=10)
        >>> out.x.shape, out.log_prob.shape
        (torch.Size([2, 4]), torch.Size([11, 2]))
    """
    log_prob = flow.log_prob if hasattr(flow, "log_prob") else flow
    if x.dim() != 2:
        raise ValueError(f"inpaint expects x of shape (batch, D); got {tuple(x.shape)}")
    if tuple(mask.shape) not in (tuple(x.shape), tuple(x.shape[-1:])):
        raise ValueError(f"mask has shape {tuple(mask.shape)} but x has shape {tuple(x.shape)}; "
                         f"the mask must be {tuple(x.shape)} or {tuple(x.shape[-1:])}")
    if mask.dtype != torch.bool:
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("mask must be boolean or 0/1 (1 = missing pixel)")
        mask = mask.bool()
    if steps < 0 or lr <= 0 or noise < 0:
        raise ValueError(f"need steps >= 0, lr > 0 and noise >= 0; got {steps}, {lr}, {noise}")
    if init not in ("uniform", "given"):
        raise ValueError(f"unknown init {init!r}; valid: uniform, given")
    if init == "uniform" and bounds is None:
        raise ValueError("init='uniform' needs bounds; pass init='given' to start from x")
    mask = mask.to(x.device).expand_as(x)
    x = x.detach()
    if init == "uniform":
        lo, hi = bounds
        start = lo + (hi - lo) * torch.rand_like(x)
    else:
        start = x
    free = torch.where(mask, start, x).requires_grad_(True)
    opt = torch.optim.Adam([free], lr=lr)
    if isinstance(snapshots, int):
        at = set(range(0, steps + 1, snapshots)) | {steps} if snapshots > 0 else set()
    else:
        at = set(snapshots or ())
    recorded = [(0, free.detach().clone())] if 0 in at else []
    trace = []
    for i in range(steps + 1):
        with torch.enable_grad():
            # observed pixels come from x, so their gradient (and Adam step) is exactly zero
            lp = log_prob(torch.where(mask, free, x))
        trace.append(lp.detach())
        if i == steps:
            break
        opt.zero_grad()
        grad = torch.autograd.grad(-lp.sum(), free)[0]
        if noise > 0:
            grad = grad + noise * torch.where(mask, torch.randn_like(grad), 0.0)
        free.grad = grad
        opt.param_groups[0]["lr"] = lr * 100.0 / (100.0 + i)
        opt.step()
        if bounds is not None:
            with torch.no_grad():
                free.clamp_(*bounds)
        if i + 1 in at:
            recorded.append((i + 1, torch.where(mask, free, x).detach().clone()))
    return Inpainting(torch.where(mask, free, x).detach(), torch.stack(trace), recorded)


class FlowModel(nn.Module):
    r"""A flow ``x = T_K(...T_1(z))``, ``z ~ prior``, as an exact-likelihood model/guide pair.

    ``model(x)`` registers the layers as ``name.flow`` and observes ``x`` at site
    ``"x"`` under ``pyro.plate("data", dim=-1)``; ``guide(x)`` has no sites. So
    :func:`pyro_deepgen.train.fit` with ``pyro.infer.Trace_ELBO()`` trains it by
    maximum likelihood (the ELBO equals ``log p(x)`` without latents), and
    :func:`pyro_deepgen.evaluate.log_likelihood` with ``num_samples=1`` is exact.

    :param x_dim: number of features.
    :param transforms: the layers, in the generative order (``z -> x``).
    :param prior: ``"logistic"`` or ``"gaussian"`` (standard, factorized).
    :param name: prefix of the ``pyro.module`` name.
    """

    def __init__(self, x_dim: int, transforms: Sequence[TransformModule], prior: str = "gaussian",
                 name: str = "flow"):
        super().__init__()
        if prior not in PRIORS:
            raise ValueError(f"unknown prior {prior!r}; valid: {', '.join(PRIORS)}")
        self.x_dim, self.prior_name, self.name = x_dim, prior, name
        self.transforms = nn.ModuleList(transforms)
        self.register_buffer("_zero", torch.zeros(()), persistent=False)

    def _check(self, x: torch.Tensor, batch: bool = False) -> None:
        if (x.dim() != 2 if batch else x.dim() < 1) or x.shape[-1] != self.x_dim:
            shape = f"(batch, {self.x_dim})" if batch else f"(..., {self.x_dim})"
            raise ValueError(f"{type(self).__name__} expects x of shape {shape}; got {tuple(x.shape)}")

    def prior(self) -> TorchDistribution:
        """The factorized prior ``p_Z`` (event dim 1)."""
        loc = self._zero.expand(self.x_dim)
        scale = loc + 1
        base = _StandardLogistic(loc, scale) if self.prior_name == "logistic" else dist.Normal(loc, scale)
        return base.to_event(1)

    def distribution(self) -> FlowDistribution:
        """The model's density over ``x`` (event dim 1)."""
        return FlowDistribution(self.prior(), self.transforms)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact ``log p(x)`` in nats, of shape ``x.shape[:-1]``."""
        self._check(x)
        return self.distribution().log_prob(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_prob(x)

    def to_latent(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``z = f(x)`` and ``log|det df/dx|``; ``log_prob(x) = prior().log_prob(z) + log_det``."""
        self._check(x)
        return _inverse_chain(self.transforms, x)

    def to_data(self, z: torch.Tensor) -> torch.Tensor:
        """``x = f^{-1}(z)``."""
        self._check(z)
        for t in self.transforms:
            z = t(z)
        return z

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """``n`` draws ``x = f^{-1}(z)``, ``z ~ prior``, shape ``(n, x_dim)``."""
        return self.distribution().sample((n,))

    def model(self, x: torch.Tensor) -> None:
        """Observes each row of ``x`` at site ``"x"`` with the flow's exact density."""
        self._check(x, batch=True)
        pyro.module(f"{self.name}.flow", self.transforms)
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("x", self.distribution(), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        """No latent sites: the model's likelihood is exact."""
        self._check(x, batch=True)

    @torch.no_grad()
    def initialize_scale(self, x: torch.Tensor) -> None:
        """Data-dependent initialization of the diagonal scaling (the first layer in the
        generative order): rescales it so that each coordinate of ``z = f(x)`` has the
        prior's standard deviation over the batch ``x``. Not in the NICE paper (cf. Glow's
        actnorm, Kingma & Dhariwal 2018, arXiv:1807.03039); without it the scaling moves
        by about ``lr`` per step, which takes thousands of steps on 8-bit images whose
        dequantized border pixels have a spread of ``1/256``. Call it before training."""
        scale = self.transforms[0] if len(self.transforms) else None
        if not isinstance(scale, DiagonalScale):
            raise ValueError(f"{type(self).__name__}.initialize_scale needs a DiagonalScale as the "
                             "first transform (generative order)")
        self._check(x, batch=True)
        if x.shape[0] < 2:
            raise ValueError(f"initialize_scale needs a batch of at least 2 rows; got {x.shape[0]}")
        z, _ = self.to_latent(x)
        scale.log_scale += torch.log(z.std(0).clamp_min(1e-8) / self.prior().stddev)

    def inpaint(self, x: torch.Tensor, mask: torch.Tensor, steps: int = 300, **kwargs) -> Inpainting:
        """:func:`inpaint` with this model's ``log_prob``."""
        return inpaint(self, x, mask, steps, **kwargs)


def _check_sizes(cls: str, x_dim: int, num_couplings: int, hidden: Sequence[int]) -> tuple[int, ...]:
    hidden = tuple(int(h) for h in hidden)
    if x_dim < 2:
        raise ValueError(f"{cls} needs x_dim >= 2 (a coupling splits x in two); got {x_dim}")
    if num_couplings < 1:
        raise ValueError(f"{cls} needs num_couplings >= 1; got {num_couplings}")
    if any(h < 1 for h in hidden):
        raise ValueError(f"{cls} needs hidden widths >= 1; got {hidden}")
    return hidden


class NICE(FlowModel):
    r"""NICE: ``num_couplings`` additive coupling layers on alternating odd/even
    partitions, then a diagonal scaling, with a factorized logistic (or Gaussian)
    prior, trained by exact maximum likelihood.

    Dinh, Krueger & Bengio, "NICE: Non-linear Independent Components Estimation",
    2014, arXiv:1410.8516. Their MNIST model: 4 couplings, 5 hidden ReLU layers of
    1000 units, logistic prior (the defaults here).

    :param x_dim: number of features (>= 2; odd sizes are fine).
    :param num_couplings: number of additive coupling layers.
    :param hidden: hidden widths of each coupling's MLP.
    :param prior: ``"logistic"`` or ``"gaussian"``.
    :param activation: hidden nonlinearity (see :data:`pyro_deepgen.nn.ACTIVATIONS`).

    Example:
        >>> import pyro
        >>> from pyro.infer import SVI, Trace_ELBO
        >>> nice = NICE(x_dim=64, hidden=(32, 32))
        >>> svi = SVI(nice.model, nice.guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
        >>> loss = svi.step(torch.rand(8, 64))  # -sum of log p(x) over the batch
        >>> nice.log_prob(torch.rand(3, 64)).shape, nice.sample(2).shape
        (torch.Size([3]), torch.Size([2, 64]))
    """

    def __init__(self, x_dim: int, num_couplings: int = 4, hidden: Sequence[int] = (1000,) * 5,
                 prior: str = "logistic", activation: str = "relu", name: str = "nice"):
        hidden = _check_sizes("NICE", x_dim, num_couplings, hidden)
        layers = [DiagonalScale(x_dim)] + [AdditiveCoupling(x_dim, i % 2, hidden, activation)
                                           for i in range(num_couplings)]
        super().__init__(x_dim, layers, prior, name)
        self.num_couplings, self.hidden = num_couplings, hidden


class RealNVP(FlowModel):
    r"""RealNVP on flat vectors: ``num_couplings`` affine coupling layers on
    alternating odd/even partitions, then a diagonal scaling, with a standard
    Gaussian (or logistic) prior.

    Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", 2017,
    arXiv:1605.08803. This is the MLP form of their coupling layer, without the
    multi-scale convolutional architecture; the final diagonal scaling (see
    :meth:`FlowModel.initialize_scale`) stands in for their batch normalization.

    :param x_dim: number of features (>= 2).
    :param num_couplings: number of affine coupling layers.
    :param hidden: hidden widths of each coupling's MLP.
    :param prior: ``"gaussian"`` or ``"logistic"``.
    :param activation: hidden nonlinearity.

    Example:
        >>> flow = RealNVP(x_dim=2, hidden=(16,))
        >>> x = torch.randn(5, 2)
        >>> z, log_det = flow.to_latent(x)  # log_prob(x) = prior().log_prob(z) + log_det
        >>> torch.allclose(flow.to_data(z), x, atol=1e-6)
        True
    """

    def __init__(self, x_dim: int, num_couplings: int = 4, hidden: Sequence[int] = (512, 512),
                 prior: str = "gaussian", activation: str = "relu", name: str = "realnvp"):
        hidden = _check_sizes("RealNVP", x_dim, num_couplings, hidden)
        layers = [DiagonalScale(x_dim)] + [AffineCoupling(x_dim, i % 2, hidden, activation)
                                           for i in range(num_couplings)]
        super().__init__(x_dim, layers, prior, name)
        self.num_couplings, self.hidden = num_couplings, hidden


def dequantize(
    x: torch.Tensor,
    levels: int = 256,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Uniform dequantization: a pixel at level ``k`` in ``{0, ..., levels-1}`` becomes
    ``(k + u) / levels`` with ``u ~ U[0, 1)``, a point of ``[k/levels, (k+1)/levels)``.

    :param x: integer levels ``k``, or floats ``k / (levels - 1)`` in [0, 1] (the scale of
        :func:`pyro_deepgen.data.load_dataset`); other values raise.
    :param noise: ``u`` itself (broadcastable to ``x``, in [0, 1]) instead of a fresh draw.
    :param generator: the random generator for ``u``.

    Example:
        >>> dequantize(torch.tensor([0.0, 1.0]), noise=torch.tensor(0.5))
        tensor([0.0020, 0.9980])
    """
    if levels < 2:
        raise ValueError(f"levels must be >= 2; got {levels}")
    if x.is_floating_point():
        if x.numel() and (x.min() < 0 or x.max() > 1):
            raise ValueError(f"float pixel data must be in [0, 1] (k / {levels - 1}); got values in "
                             f"[{x.min().item():.4g}, {x.max().item():.4g}]")
        k = torch.round(x * (levels - 1))
        if x.numel() and (x * (levels - 1) - k).abs().max() > 1e-3:
            raise ValueError(f"float pixel data must be on the grid k / {levels - 1} of {levels} "
                             "levels; is it already dequantized or rescaled?")
    else:
        if x.numel() and (x.min() < 0 or x.max() > levels - 1):
            raise ValueError(f"integer pixel levels must be in 0..{levels - 1}; got values in "
                             f"[{x.min().item()}, {x.max().item()}]")
        k = x.to(torch.get_default_dtype())
    if noise is None:
        noise = torch.rand(k.shape, generator=generator, dtype=k.dtype, device=k.device)
    elif noise.numel() and (noise.min() < 0 or noise.max() > 1):
        raise ValueError("noise must be in [0, 1]")
    return (k + noise) / levels


class DequantizedDataset(TensorDataset):
    """A TensorDataset whose first tensor (8-bit pixel data, see :func:`dequantize`)
    is dequantized afresh, with torch's global RNG, on every indexing.

    Example:
        >>> ds = DequantizedDataset(torch.tensor([[0.0, 1.0]]))
        >>> bool(((ds[0][0] >= 0) & (ds[0][0] < 1)).all())
        True
    """

    def __init__(self, *tensors: torch.Tensor, levels: int = 256):
        super().__init__(*tensors)
        self.levels = levels
        dequantize(tensors[0], levels, noise=torch.zeros(()))  # fail early on data off the grid

    def __getitem__(self, index):
        x, *rest = super().__getitem__(index)
        return (dequantize(x, self.levels), *rest)


def bits_per_dim(log_prob_nats: torch.Tensor | float, x_dim: int, levels: int = 256) -> torch.Tensor | float:
    r"""Converts the log-density ``log p(y)`` (nats) of dequantized data ``y`` on the unit
    cube (:func:`dequantize`) to bits per dimension of the discrete data,
    ``-(log p(y) - D log(levels)) / (D log 2)``: an upper bound on the discrete negative
    log-likelihood per dimension when ``log p(y)`` is averaged over the noise ``u``.

    Example:
        >>> bits_per_dim(0.0, x_dim=784)  # the uniform density on the cube: 8 bits/dim
        8.0
    """
    if x_dim < 1 or levels < 2:
        raise ValueError(f"need x_dim >= 1 and levels >= 2; got x_dim={x_dim}, levels={levels}")
    return (x_dim * math.log(levels) - log_prob_nats) / (x_dim * math.log(2))
