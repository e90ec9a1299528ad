"""Normalizing-flow guides: amortized (conditional) flows on top of a Gaussian encoder.

Pyro provides the conditional planar, radial, affine autoregressive (IAF),
affine coupling and Householder transforms; this module adds the one it lacks,
a conditional Sylvester flow, a small hypernetwork for the flows whose
parameters are a linear map of the context, and :class:`FlowGuide`, which turns
any of them into an amortized guide with one argument.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import pyro
import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from pyro.distributions.conditional import ConditionalTransformModule
from pyro.distributions.torch_transform import TransformModule
from torch import nn
from torch.distributions import Transform, constraints

from pyro_deepgen.nn import MLP, NormalEncoder

__all__ = [
    "FLOWS",
    "INITS",
    "ConditionalSylvester",
    "ConditionedSylvester",
    "Flow",
    "FlowGuide",
    "ParamNet",
    "Sylvester",
    "flow_transforms",
    "init_identity_",
]

FLOWS = ("planar", "radial", "sylvester", "iaf", "coupling", "householder")
INITS = ("pyro", "identity")


def _check_flow(flow: str) -> None:
    if flow not in FLOWS:
        raise ValueError(f"unknown flow {flow!r}; valid: {', '.join(FLOWS)}")


class ParamNet(nn.Module):
    """Maps a context to a tuple of parameter tensors of sizes ``param_dims``
    (a single tensor when there is one): an :class:`~pyro_deepgen.nn.MLP` with
    ``hidden`` layers, linear when ``hidden`` is empty. A hypernetwork for
    Pyro's conditional transforms, like ``pyro.nn.DenseNN`` but allowing no
    hidden layer (the amortization of Rezende & Mohamed 2015, arXiv:1505.05770).

    Example:
        >>> bias, u, w = ParamNet(5, [1, 3, 3])(torch.zeros(4, 5))
        >>> bias.shape, u.shape
        (torch.Size([4, 1]), torch.Size([4, 3]))
    """

    def __init__(self, context_dim: int, param_dims: Sequence[int], hidden: Sequence[int] = (),
                 activation: str = "tanh"):
        super().__init__()
        self.param_dims = tuple(int(d) for d in param_dims)
        self.net = MLP(context_dim, tuple(hidden), sum(self.param_dims), activation)

    def forward(self, context: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        out = self.net(context)
        if len(self.param_dims) == 1:
            return out
        return tuple(out.split(self.param_dims, dim=-1))


def _reflect(x: torch.Tensor, u: torch.Tensor, order: Sequence[int]) -> torch.Tensor:
    """Applies the Householder reflections ``I - 2 u_i u_i^T`` (unit ``u[..., i, :]``) in ``order``."""
    for i in order:
        ui = u[..., i, :]
        x = x - 2.0 * (x * ui).sum(-1, keepdim=True) * ui
    return x


class ConditionedSylvester(Transform):
    r"""A Sylvester flow with fixed (already conditioned) parameters:

    .. math:: y = x + Q R \tanh(S Q^\top x + b),

    with :math:`Q = H_1 \cdots H_M` a product of Householder reflections and
    :math:`R, S` upper triangular with diagonals :math:`\tanh(\cdot)`, so that
    :math:`r_{ii} s_{ii} \in (-1, 1)` and the map is invertible (van den Berg et
    al. 2018, arXiv:1803.05649, section 3). Then
    :math:`\log|\det J| = \sum_i \log(1 + \tanh'(\cdot)_i\, r_{ii} s_{ii})`.

    ``params`` is a tuple ``(u, r, s, r_diag, s_diag, b)`` of shapes
    ``(..., M, D)``, ``(..., D, D)`` twice, ``(..., D)`` three times, or a
    callable returning it. The batch dims broadcast with those of ``x``. The
    inverse has no closed form: like Pyro's planar flow, only values produced
    by the forward call can be scored (the inverse is cached).
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, params: tuple | Callable[[], tuple]):
        super().__init__(cache_size=1)
        self._params = params
        self._cached_logdet: torch.Tensor | None = None

    def params(self) -> tuple[torch.Tensor, ...]:
        """``(u, R, S, b)``: unit reflection vectors and the triangular matrices."""
        u, r, s, r_diag, s_diag, b = self._params() if callable(self._params) else self._params
        u = u / u.norm(dim=-1, keepdim=True)
        R = r.triu(1) + torch.diag_embed(torch.tanh(r_diag))
        S = s.triu(1) + torch.diag_embed(torch.tanh(s_diag))
        return u, R, S, b

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        u, R, S, b = self.params()
        m = u.shape[-2]
        qx = _reflect(x, u, range(m))  # Q^T x = H_M ... H_1 x
        pre = (S @ qx.unsqueeze(-1)).squeeze(-1) + b
        act = torch.tanh(pre)
        out = x + _reflect((R @ act.unsqueeze(-1)).squeeze(-1), u, reversed(range(m)))
        diag = R.diagonal(dim1=-2, dim2=-1) * S.diagonal(dim1=-2, dim2=-1)
        self._cached_logdet = torch.log1p((1 - act.pow(2)) * diag).sum(-1)
        return out

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        raise KeyError("ConditionedSylvester has no analytic inverse; it can only score "
                       "values from its own forward call (cached)")

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x_old, y_old = self._cached_x_y
        if x is not x_old or y is not y_old:
            self(x)  # recompute (and recache) the log-determinant for this x
        return self._cached_logdet


class Sylvester(ConditionedSylvester, TransformModule):
    r"""The unconditional Householder-Sylvester flow
    :math:`y = x + Q R \tanh(S Q^\top x + b)` with learned parameters (see
    :class:`ConditionedSylvester`).

    van den Berg, Hasenclever, Tomczak & Welling, "Sylvester Normalizing Flows
    for Variational Inference", 2018, arXiv:1803.05649.

    Pyro's own ``pyro.distributions.transforms.Sylvester`` (1.9) computes
    ``x @ (S Q^T)`` and ``tanh(.) @ (Q R)``, i.e. the map with ``Q S^T`` and
    ``R^T Q^T``, whose log-determinant is not the one it returns once ``Q`` is
    not the identity; this one is checked against autograd Jacobians.

    Example:
        >>> t = Sylvester(3, count_transforms=2)
        >>> x = torch.randn(4, 3)
        >>> t.log_abs_det_jacobian(x, t(x)).shape
        torch.Size([4])
    """

    def __init__(self, input_dim: int, count_transforms: int = 1):
        super().__init__(self._parameters_tuple)
        d, m = input_dim, count_transforms
        self.input_dim, self.count_transforms = d, m
        self.u = nn.Parameter(torch.randn(m, d))
        self.r = nn.Parameter(torch.empty(d, d).uniform_(-0.01, 0.01))
        self.s = nn.Parameter(torch.empty(d, d).uniform_(-0.01, 0.01))
        self.r_diag = nn.Parameter(torch.empty(d).uniform_(-0.01, 0.01))
        self.s_diag = nn.Parameter(torch.empty(d).uniform_(-0.01, 0.01))
        self.b = nn.Parameter(torch.empty(d).uniform_(-0.01, 0.01))

    def _parameters_tuple(self) -> tuple[torch.Tensor, ...]:
        return self.u, self.r, self.s, self.r_diag, self.s_diag, self.b


class ConditionalSylvester(ConditionalTransformModule):
    r"""A conditional Householder-Sylvester flow: a hypernetwork maps the
    context to the parameters of a :class:`ConditionedSylvester` transform,
    one set per datapoint, as in the amortized Sylvester flows of

    van den Berg, Hasenclever, Tomczak & Welling, "Sylvester Normalizing Flows
    for Variational Inference", 2018, arXiv:1803.05649 (the Householder
    variant: :math:`Q` is a product of ``count_transforms`` reflections, and
    :math:`R, S` are full upper-triangular :math:`D \times D` matrices).

    Pyro has a non-conditional ``Sylvester`` transform but no conditional one.

    The hypernetwork outputs :math:`MD + 2D^2 + 3D` numbers per datapoint
    (the full triangular matrices), so its output layer grows with
    :math:`D^2`: about a million weights for ``D = 50`` and a 200-wide context.

    :param input_dim: D, the dimension of the flow.
    :param context_dim: dimension of the context.
    :param count_transforms: M, the number of Householder reflections in Q.
    :param hidden: hidden layers of the hypernetwork (empty: linear).

    Example:
        >>> flow = ConditionalSylvester(3, context_dim=5)
        >>> base = dist.Normal(torch.zeros(3), torch.ones(3)).to_event(1)
        >>> q = dist.ConditionalTransformedDistribution(base, [flow]).condition(torch.randn(5))
        >>> z = q.rsample((4,))
        >>> z.shape, q.log_prob(z).shape
        (torch.Size([4, 3]), torch.Size([4]))
    """

    def __init__(self, input_dim: int, context_dim: int, count_transforms: int = 1,
                 hidden: Sequence[int] = (), activation: str = "tanh"):
        super().__init__()
        if count_transforms < 1:
            raise ValueError(f"count_transforms must be >= 1; got {count_transforms}")
        self.input_dim, self.context_dim, self.count_transforms = input_dim, context_dim, count_transforms
        d, m = input_dim, count_transforms
        self.nn = ParamNet(context_dim, [m * d, d * d, d * d, d, d, d], hidden, activation)

    def _params(self, context: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if context.shape[-1] != self.context_dim:
            raise ValueError(f"ConditionalSylvester: context has size {context.shape[-1]}, "
                             f"but context_dim={self.context_dim}")
        u, r, s, r_diag, s_diag, b = self.nn(context)
        d, m = self.input_dim, self.count_transforms
        batch = context.shape[:-1]
        return (u.reshape(*batch, m, d), r.reshape(*batch, d, d), s.reshape(*batch, d, d),
                r_diag, s_diag, b)

    def condition(self, context: torch.Tensor) -> ConditionedSylvester:
        return ConditionedSylvester(self._params(context))


class _Reverse(T.Permute, TransformModule):
    """Reverses the last dimension (a ``Permute`` that is also a module, so
    that it sits in a ``ModuleList`` and moves with ``.to(device)``). No cache:
    the module outlives each guide call, and must not hold on to its graph."""

    def __init__(self, dim: int):
        super().__init__(torch.arange(dim - 1, -1, -1), cache_size=0)
        perm = self.__dict__.pop("permutation")
        self.register_buffer("permutation", perm)


def _default_hidden(flow: str, dim: int) -> tuple[int, ...]:
    # planar, radial, sylvester: parameters linear in the context (Rezende & Mohamed 2015);
    # the autoregressive and coupling networks need a hidden layer.
    return (3 * dim + 1,) if flow in ("iaf", "coupling") else ()


def flow_transforms(flow: str, dim: int, num_flows: int, context_dim: int | None = None,
                    hidden: Sequence[int] | None = None, init: str = "pyro") -> nn.ModuleList:
    """``num_flows`` transforms of kind ``flow`` (one of :data:`FLOWS`) on
    ``R^dim``: Pyro's conditional transforms when ``context_dim`` is given,
    else their unconditional versions. Coupling layers alternate which half
    they change (a reversal ``Permute`` between layers); each IAF layer has
    its own random variable order (Pyro's default).

    :param hidden: hidden layers of each transform's network; default linear
        for planar, radial and Sylvester, ``(3 * dim + 1,)`` for IAF and coupling.
    :param init: ``"pyro"``: Pyro's random initialisation; ``"identity"``
        (unconditional transforms only): each transform then starts as the
        identity map (see :func:`init_identity_`).

    Example:
        >>> ts = flow_transforms("planar", 2, num_flows=3)
        >>> q = dist.TransformedDistribution(dist.Normal(torch.zeros(2), 1.).to_event(1), list(ts))
        >>> q.rsample((5,)).shape
        torch.Size([5, 2])
    """
    _check_flow(flow)
    if num_flows < 0:
        raise ValueError(f"num_flows must be >= 0; got {num_flows}")
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; valid: {', '.join(INITS)}")
    if init == "identity" and context_dim is not None:
        raise ValueError("init='identity' is for unconditional transforms (context_dim=None)")
    if dim < 2 and flow in ("iaf", "coupling"):
        raise ValueError(f"the {flow!r} flow needs dim >= 2; got dim={dim}")
    hidden = _default_hidden(flow, dim) if hidden is None else tuple(hidden)
    if not hidden and flow in ("iaf", "coupling"):
        raise ValueError(f"the {flow!r} flow needs at least one hidden layer; got hidden=()")
    out: list[nn.Module] = []
    for i in range(num_flows):
        if flow == "coupling" and i > 0:
            out.append(_Reverse(dim))
        if context_dim is None:
            out.append(_unconditional(flow, dim, hidden))
            if init == "identity":
                init_identity_(out[-1])
        else:
            out.append(_conditional(flow, dim, context_dim, hidden))
    return nn.ModuleList(out)


@torch.no_grad()
def init_identity_(transform: nn.Module) -> nn.Module:
    r"""Sets an unconditional transform's parameters, in place, so that it is
    the identity map, keeping the random parameters that make the layers
    differ (planar ``w, b``; radial :math:`\alpha', x_0`; Sylvester ``S, Q, b``;
    the hidden layers of the IAF and coupling networks). Returns ``transform``.

    - planar: Pyro's invertibility reparametrisation gives
      :math:`\hat u = u_\perp + (\mathrm{softplus}(w^\top u) - 1)\, w/\|w\|^2`
      (:math:`u_\perp`: the part of :math:`u` orthogonal to :math:`w`), which is
      zero for :math:`u = \log(e - 1)\, w/\|w\|^2`;
    - radial: :math:`\beta' = \alpha'`, so that
      :math:`\beta = \mathrm{softplus}(\beta') - \mathrm{softplus}(\alpha') = 0`;
    - Sylvester: :math:`R = 0`;
    - IAF and coupling: the last layer of the network is zero (shift 0, log-scale 0);
    - Householder reflections and permutations cannot be the identity and are left as they are.

    Pyro's own initialisation is far from the identity once layers are
    composed: it draws planar :math:`u, w` uniformly in :math:`\pm 1/\sqrt{D}`,
    so that :math:`w^\top u` is small and :math:`w^\top \hat u = \mathrm{softplus}(w^\top u) - 1`
    is about :math:`-0.3`: each planar layer contracts along :math:`w`; in 2-D,
    32 such layers map :math:`N(0, I)` to covariance eigenvalues below
    :math:`10^{-4}`, and 32 random IAF layers blow it up instead. Starting at
    the identity, a flow of any depth starts at its base distribution
    (like the zero-initialised last layers of Glow, Kingma & Dhariwal 2018,
    arXiv:1807.03039).

    Example:
        >>> t = init_identity_(T.Planar(3))
        >>> x = torch.randn(4, 3)
        >>> torch.allclose(t(x), x), torch.allclose(t.log_abs_det_jacobian(x, t(x)), torch.zeros(4))
        (True, True)
    """
    if isinstance(transform, T.Planar):
        transform.u.copy_(math.log(math.e - 1) * transform.w / transform.w.pow(2).sum())
    elif isinstance(transform, T.Radial):
        transform.beta_prime.copy_(transform.alpha_prime)
    elif isinstance(transform, Sylvester):
        transform.r.zero_()
        transform.r_diag.zero_()
    elif isinstance(transform, (T.AffineAutoregressive, T.AffineCoupling)):
        net = transform.arn if isinstance(transform, T.AffineAutoregressive) else transform.nn
        net.layers[-1].weight.zero_()
        net.layers[-1].bias.zero_()
    elif isinstance(transform, ConditionalTransformModule):
        raise ValueError(f"init_identity_ is for unconditional transforms; got {type(transform).__name__}")
    return transform


def _unconditional(flow: str, dim: int, hidden: tuple[int, ...]) -> nn.Module:
    if flow == "planar":
        return T.Planar(dim)
    if flow == "radial":
        return T.Radial(dim)
    if flow == "sylvester":
        return Sylvester(dim, count_transforms=1)
    if flow == "householder":
        return T.Householder(dim, count_transforms=1)
    if flow == "iaf":
        return T.affine_autoregressive(dim, hidden_dims=list(hidden))
    return T.affine_coupling(dim, hidden_dims=list(hidden))


def _conditional(flow: str, dim: int, context_dim: int, hidden: tuple[int, ...]) -> nn.Module:
    if flow == "planar":
        return T.ConditionalPlanar(ParamNet(context_dim, [1, dim, dim], hidden))
    if flow == "radial":
        return T.ConditionalRadial(ParamNet(context_dim, [dim, 1, 1], hidden))
    if flow == "sylvester":
        return ConditionalSylvester(dim, context_dim, hidden=hidden)
    if flow == "householder":
        return T.ConditionalHouseholder(dim, ParamNet(context_dim, [dim], hidden), count_transforms=1)
    if flow == "iaf":
        return T.conditional_affine_autoregressive(dim, context_dim, hidden_dims=list(hidden))
    return T.conditional_affine_coupling(dim, context_dim, hidden_dims=list(hidden))


class FlowGuide(nn.Module):
    r"""An amortized normalizing-flow guide ``q(z|x)``: a diagonal Gaussian
    ``N(loc(x), scale(x))`` from an encoder, pushed through ``num_flows``
    conditional transforms whose parameters a context ``h(x)`` sets per
    datapoint.

    Rezende & Mohamed, "Variational Inference with Normalizing Flows", 2015,
    arXiv:1505.05770 (planar, radial); Kingma, Salimans, Jozefowicz, Chen,
    Sutskever & Welling, "Improved Variational Inference with Inverse
    Autoregressive Flow", 2016, arXiv:1606.04934 (IAF, with the context ``h``);
    van den Berg, Hasenclever, Tomczak & Welling, "Sylvester Normalizing Flows
    for Variational Inference", 2018, arXiv:1803.05649; Dinh, Sohl-Dickstein &
    Bengio, "Density estimation using Real NVP", 2017, arXiv:1605.08803
    (coupling); Tomczak & Welling, "Improving Variational Auto-Encoders using
    Householder Flow", 2016, arXiv:1611.09630.

    :param encoder: ``x_dim`` (an int: a :class:`~pyro_deepgen.nn.NormalEncoder`
        with ``hidden`` layers is built), a ``NormalEncoder`` (the context is its
        trunk's output), or any module with ``forward(x) -> (loc, scale, context)``
        (then ``context_dim`` is required).
    :param z_dim: latent dimension.
    :param flow: one of :data:`FLOWS`.
    :param num_flows: K, the number of transforms.
    :param context_dim: size of the context; for a ``NormalEncoder`` (or an
        int), a linear layer maps the trunk's output to this size, and by
        default the trunk's output is the context.
    :param flow_hidden: hidden layers of each transform's network (see
        :func:`flow_transforms`).
    :param site: the latent site that :meth:`guide` samples.
    :param name: the ``pyro.module`` name that :meth:`guide` registers.

    ``distribution(x)`` is ``q(z|x)`` with batch shape ``(batch,)`` and event
    shape ``(z_dim,)``; under a particle plate its samples have shape
    ``(k, batch, z_dim)`` and the context broadcasts.

    Example:
        >>> import pyro
        >>> from pyro.infer import SVI, Trace_ELBO
        >>> g = FlowGuide(4, z_dim=2, flow="iaf", num_flows=2, hidden=(16,))
        >>> def model(x):
        ...     with pyro.plate("data", x.shape[0], dim=-1):
        ...         z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.).to_event(1))
        ...         pyro.sample("x", dist.Normal(z.repeat(1, 2), 1.).to_event(1), obs=x)
        >>> svi = SVI(model, g.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
        >>> loss = svi.step(torch.randn(8, 4))
        >>> g.distribution(torch.randn(8, 4)).rsample().shape
        torch.Size([8, 2])
    """

    def __init__(
        self,
        encoder: int | nn.Module,
        z_dim: int,
        flow: str = "planar",
        num_flows: int = 4,
        context_dim: int | None = None,
        hidden: Sequence[int] = (200,),
        activation: str = "tanh",
        flow_hidden: Sequence[int] | None = None,
        site: str = "z",
        name: str = "flow_guide",
    ):
        super().__init__()
        _check_flow(flow)
        if num_flows < 1:
            raise ValueError(f"num_flows must be >= 1; got {num_flows}")
        if isinstance(encoder, int):
            encoder = NormalEncoder(encoder, tuple(hidden), z_dim, activation)
        if not isinstance(encoder, nn.Module):
            raise ValueError(f"encoder must be an int (x_dim) or an nn.Module; got {type(encoder).__name__}")
        self.encoder = encoder
        self.context_head: nn.Module | None = None
        if isinstance(encoder, NormalEncoder):
            if encoder.out_dim != z_dim:
                raise ValueError(f"the encoder outputs {encoder.out_dim} dims but z_dim={z_dim}")
            trunk_dim = encoder.loc.in_features
            if context_dim is not None and context_dim != trunk_dim:
                self.context_head = nn.Linear(trunk_dim, context_dim)
            context_dim = trunk_dim if context_dim is None else context_dim
        elif context_dim is None:
            raise ValueError("FlowGuide needs context_dim for an encoder that is not a NormalEncoder "
                             "(its forward(x) must return (loc, scale, context))")
        self.z_dim, self.flow, self.num_flows, self.context_dim = z_dim, flow, num_flows, context_dim
        self.site, self.name = site, name
        self.transforms = flow_transforms(flow, z_dim, num_flows, context_dim, flow_hidden)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(loc, scale, context)`` for ``x``; checks the context's size and values."""
        if isinstance(self.encoder, NormalEncoder):
            h = self.encoder.trunk(x)
            loc, scale = self.encoder.loc(h), torch.nn.functional.softplus(self.encoder.scale(h))
            scale = scale + self.encoder.min_scale
            context = h if self.context_head is None else self.context_head(h)
        else:
            loc, scale, context = self.encoder(x)
        if context.shape[-1] != self.context_dim:
            raise ValueError(f"FlowGuide: the encoder's context has size {context.shape[-1]}, "
                             f"but the flow expects context_dim={self.context_dim}")
        if not bool(torch.isfinite(context).all()):
            row = int((~torch.isfinite(context)).reshape(-1, context.shape[-1]).any(-1).nonzero()[0])
            raise ValueError(f"FlowGuide: the context h(x) has a NaN or infinite value (first at "
                             f"datapoint {row}); check x and the encoder's parameters")
        return loc, scale, context

    def condition(self, loc: torch.Tensor, scale: torch.Tensor,
                  context: torch.Tensor) -> dist.TransformedDistribution:
        """The flow distribution for given base parameters and context."""
        base = dist.Normal(loc, scale).to_event(1)
        return dist.ConditionalTransformedDistribution(base, list(self.transforms)).condition(context)

    def distribution(self, x: torch.Tensor) -> dist.TransformedDistribution:
        """``q(z|x)``: batch shape ``x.shape[:-1]``, event shape ``(z_dim,)``."""
        return self.condition(*self.encode(x))

    forward = distribution

    def location(self, x: torch.Tensor) -> torch.Tensor:
        """A deterministic point of ``q(z|x)``: the flow applied to the base
        mean ``loc(x)`` (``q``'s mean has no closed form)."""
        loc, _, context = self.encode(x)
        z = loc
        for t in self.transforms:
            z = t.condition(context)(z) if isinstance(t, ConditionalTransformModule) else t(z)
        return z

    def guide(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """Samples ``site`` from ``q(z|x)`` under ``pyro.plate("data", dim=-1)``,
        registering this module as ``name``; extra arguments are ignored."""
        pyro.module(self.name, self)
        with pyro.plate("data", x.shape[0], dim=-1):
            return pyro.sample(self.site, self.distribution(x))


class Flow(nn.Module):
    r"""An unconditional normalizing flow on ``R^dim``: a diagonal Gaussian
    (learned location and scale, or a fixed standard normal) pushed through
    ``num_flows`` transforms; the flow of the 2-D experiments of

    Rezende & Mohamed, "Variational Inference with Normalizing Flows", 2015,
    arXiv:1505.05770 (and IAF: Kingma et al. 2016, arXiv:1606.04934).

    :param dim: the dimension.
    :param flow: one of :data:`FLOWS`.
    :param num_flows: K, the number of transforms.
    :param hidden: hidden layers of the IAF and coupling networks (see :func:`flow_transforms`).
    :param learn_base: learn the base Gaussian's location and scale.
    :param site: the sample site that :meth:`guide` draws.
    :param name: the ``pyro.module`` name that :meth:`guide` registers.
    :param init: ``"identity"``: the transforms start as the identity map, so
        that the flow starts at its base distribution whatever ``num_flows``
        (:func:`init_identity_`); ``"pyro"``: Pyro's random initialisation,
        which for deep planar or IAF flows starts far from the base (a near
        point mass, or a blow-up) and trains poorly.

    Example:
        >>> q = Flow(2, "radial", num_flows=4)
        >>> z = q.distribution().rsample((10,))
        >>> z.shape, q.distribution().log_prob(z).shape
        (torch.Size([10, 2]), torch.Size([10]))
    """

    def __init__(self, dim: int, flow: str = "planar", num_flows: int = 8,
                 hidden: Sequence[int] | None = None, learn_base: bool = True,
                 site: str = "z", name: str = "flow", init: str = "identity"):
        super().__init__()
        self.dim, self.flow, self.num_flows, self.site, self.name = dim, flow, num_flows, site, name
        self.transforms = flow_transforms(flow, dim, num_flows, hidden=hidden, init=init)
        self.loc = nn.Parameter(torch.zeros(dim), requires_grad=learn_base)
        self.log_scale = nn.Parameter(torch.zeros(dim), requires_grad=learn_base)

    def distribution(self) -> dist.TransformedDistribution:
        """The flow's distribution, event shape ``(dim,)``."""
        base = dist.Normal(self.loc, self.log_scale.exp()).to_event(1)
        return dist.TransformedDistribution(base, list(self.transforms))

    def guide(self, *args, **kwargs) -> torch.Tensor:
        """Samples ``site`` from the flow (a guide for a model with no data); arguments are ignored."""
        pyro.module(self.name, self)
        return pyro.sample(self.site, self.distribution())
