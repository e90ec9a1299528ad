r"""Hamiltonian variational inference: an amortized guide refined by learned,
differentiable Hamiltonian transitions on the model's own log joint.

Salimans, Kingma & Welling, "Markov Chain Monte Carlo and Variational Inference:
Bridging the Gap", 2015, arXiv:1410.6460.

With :math:`z_0 \sim q(z_0|x)` and, for :math:`t = 1..T`, :math:`v_t \sim q_t(v|x, z_{t-1})`
and :math:`(z_t, v'_t)` = ``leapfrog``:math:`(z_{t-1}, v_t)` (volume preserving),

.. math:: \log \tilde q(z_T|x) = \log q(z_0|x) + \sum_t \big[\log q_t(v_t|x, z_{t-1})
          - \log r_t(v'_t|x, z_t)\big]

makes :math:`\log p(x, z_T) - \log \tilde q(z_T|x)` an unbiased estimate of a lower
bound on the ELBO of the marginal :math:`q(z_T|x)`, and
:math:`p(x, z_T)/\tilde q(z_T|x)` an unbiased estimate of :math:`p(x)`, so that any
Pyro ELBO, and IWAE, train and evaluate it.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from torch import nn
from torch.nn.functional import softplus

from pyro_deepgen.infer.log_joint import log_joint
from pyro_deepgen.mcmc import check_counts, check_step_size, leapfrog
from pyro_deepgen.nn import MLP

__all__ = ["HamiltonianGuide", "REVERSE"]

REVERSE = ("learned", "none")


class _HiddenBaseSite(Messenger):
    """Renames the base guide's latent site and keeps it (and the base guide's plate
    sites, which the guide opens again) out of every trace, while the outer plates
    (e.g. the particle plate) still broadcast it; keeps the latent site's message."""

    def __init__(self, site: str, new_name: str):
        super().__init__()
        self.site, self.new_name = site, new_name
        self.msg: dict | None = None

    def _pyro_sample(self, msg) -> None:
        if msg["name"] == self.site and not msg["is_observed"]:
            msg["name"] = self.new_name
            msg["infer"] = {**(msg["infer"] or {}), "_do_not_trace": True, "is_auxiliary": True}
        elif site_is_subsample(msg):
            msg["infer"] = {**(msg["infer"] or {}), "_do_not_trace": True, "is_auxiliary": True}

    def _pyro_post_sample(self, msg) -> None:
        if msg["name"] == self.new_name:
            self.msg = msg


class _Gaussian(nn.Module):
    """``N(mu, sigma)`` over ``z_dim`` from ``[context, z]``, starting at ``N(0, I)``."""

    def __init__(self, in_dim: int, z_dim: int, hidden: Sequence[int], activation: str):
        super().__init__()
        self.net = MLP(in_dim, tuple(hidden), 2 * z_dim, activation)
        last = self.net[-1]
        nn.init.zeros_(last.weight)
        with torch.no_grad():
            last.bias.zero_()
            last.bias[z_dim:] = math.log(math.e - 1)  # softplus^-1(1)

    def forward(self, h: torch.Tensor) -> dist.TorchDistribution:
        loc, raw = self.net(h).chunk(2, dim=-1)
        return dist.Normal(loc, softplus(raw) + 1e-4).to_event(1)


class HamiltonianGuide(nn.Module):
    r"""Hamiltonian variational inference (HVI) around an amortized base guide.

    Salimans, Kingma & Welling, "Markov Chain Monte Carlo and Variational
    Inference: Bridging the Gap", 2015, arXiv:1410.6460.

    Calling the guide draws :math:`z_0` from ``base_guide`` (whose site is hidden
    from traces), then applies ``num_transitions`` transitions, each a momentum
    :math:`v \sim q_t(v|x,z)`, ``num_leapfrog`` differentiable leapfrog steps on
    :math:`\log p(x, z)` (from Pyro's tracing of ``model``, so any model with a
    continuous latent site works), and a reverse model :math:`r_t(v'|x,z)`. It
    records one site, a ``Delta`` at :math:`z_T` whose log density is
    :math:`\log q(z_0|x) + \sum_t [\log q_t(v_t) - \log r_t(v'_t)]`, under the same
    ``"data"`` plate as the base guide. Gradients reach the base guide, the momentum
    and reverse networks, the step sizes and the model's parameters through the
    dynamics. Objectives that need a path derivative of :math:`\log q` (STL, DReG)
    do not apply: use ``Trace_ELBO`` or :class:`~pyro_deepgen.infer.IWAE`.

    :param base_guide: the amortized guide of ``z_0``, a callable with the model's
        arguments (e.g. ``vae.guide``); its parameters register themselves.
    :param model: the model, called with the guide's arguments.
    :param x_dim: size of ``x`` (the guide's first argument), the context of the
        momentum and reverse networks.
    :param z_dim: size of the latent site.
    :param num_transitions: T, the Hamiltonian transitions.
    :param num_leapfrog: L, leapfrog steps per transition.
    :param step_size: the initial step size of every dimension.
    :param learn_step_size: learn one step size per transition and dimension
        (kept positive through ``exp``); otherwise they stay fixed.
    :param reverse: ``"learned"`` (an amortized Gaussian :math:`r_t(v'|x, z_t)`) or
        ``"none"`` (:math:`r_t = N(0, I)`, the momentum prior).
    :param hidden: hidden widths of the momentum and reverse networks, which see
        ``[h(x), z]`` with ``h`` a ``context_dim``-wide embedding of ``x``.
    :param site: the latent site's name.
    :param name: the ``pyro.module`` name of the guide's own networks.

    Example:
        >>> import pyro
        >>> from pyro.infer import SVI, Trace_ELBO
        >>> from pyro_deepgen.models import VAE
        >>> vae = VAE(x_dim=64, z_dim=2, hidden=(32,))
        >>> hvi = HamiltonianGuide(vae.guide, vae.model, x_dim=64, z_dim=2, num_transitions=2)
        >>> svi = SVI(vae.model, hvi, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
        >>> loss = svi.step(torch.bernoulli(torch.full((8, 64), 0.5)))
    """

    def __init__(
        self,
        base_guide: Callable,
        model: Callable,
        x_dim: int,
        z_dim: int,
        num_transitions: int = 1,
        num_leapfrog: int = 5,
        step_size: float = 0.05,
        learn_step_size: bool = True,
        reverse: str = "learned",
        hidden: Sequence[int] = (),
        context_dim: int = 64,
        activation: str = "tanh",
        site: str = "z",
        name: str = "hvi",
    ):
        super().__init__()
        check_counts("HamiltonianGuide", num_transitions=num_transitions, num_leapfrog=num_leapfrog)
        check_step_size(step_size)
        if reverse not in REVERSE:
            raise ValueError(f"unknown reverse {reverse!r}; valid: {', '.join(REVERSE)}")
        if x_dim < 1 or z_dim < 1:
            raise ValueError(f"x_dim and z_dim must be >= 1; got x_dim={x_dim}, z_dim={z_dim}")
        # plain attributes, not submodules: their parameters belong to the model and base guide
        self.__dict__["base_guide"] = base_guide
        self.__dict__["model"] = model
        self.x_dim, self.z_dim, self.site, self.name = x_dim, z_dim, site, name
        self.num_transitions, self.num_leapfrog, self.reverse = num_transitions, num_leapfrog, reverse
        log_eps = torch.full((num_transitions, z_dim), math.log(step_size))
        if learn_step_size:
            self.log_step_size = nn.Parameter(log_eps)
        else:
            self.register_buffer("log_step_size", log_eps)
        self.context = nn.Sequential(nn.Linear(x_dim, context_dim), nn.Tanh())
        self.momentum = nn.ModuleList(
            _Gaussian(context_dim + z_dim, z_dim, hidden, activation) for _ in range(num_transitions))
        self.reverse_model = nn.ModuleList(
            _Gaussian(context_dim + z_dim, z_dim, hidden, activation)
            for _ in range(num_transitions if reverse == "learned" else 0))

    @property
    def step_size(self) -> torch.Tensor:
        """The step sizes, shape ``(num_transitions, z_dim)``."""
        return self.log_step_size.exp()

    def _reverse(self, t: int, hz: torch.Tensor) -> dist.TorchDistribution:
        if self.reverse == "learned":
            return self.reverse_model[t](hz)
        return dist.Normal(torch.zeros_like(hz[..., :self.z_dim]), 1.0).to_event(1)

    def forward(self, *args, **kwargs) -> torch.Tensor:
        """Runs the guide (``guide(*args)`` is the same); returns :math:`z_T`."""
        x = args[0]
        if x.shape[-1] != self.x_dim:
            raise ValueError(f"HamiltonianGuide(x_dim={self.x_dim}) got x of shape {tuple(x.shape)}")
        pyro.module(self.name, self)
        hide = _HiddenBaseSite(self.site, f"{self.name}.{self.site}0")
        with hide:
            self.base_guide(*args, **kwargs)
        if hide.msg is None:
            raise ValueError(f"the base guide has no latent site {self.site!r}")
        base, z = hide.msg["fn"], hide.msg["value"]
        if not getattr(base, "has_rsample", False):
            raise ValueError(f"HamiltonianGuide needs a reparameterized base guide; site "
                             f"{self.site!r} has {type(base).__name__} without rsample")
        frames = [f for f in hide.msg["cond_indep_stack"] if f.dim == -1]
        if not frames:
            raise ValueError(f"the base guide's site {self.site!r} is not under a plate at dim=-1")
        frame = frames[0]
        log_q = base.log_prob(z)
        log_p = log_joint(self.model, args, kwargs, self.site, owner="HamiltonianGuide")
        differentiable = torch.is_grad_enabled()
        h = self.context(x)
        eps = self.step_size
        grad = None  # d log p / dz at z, carried from one transition to the next
        for t in range(self.num_transitions):
            hz = torch.cat([h.expand(*z.shape[:-1], h.shape[-1]), z], dim=-1)
            q_v = self.momentum[t](hz)
            v = q_v.rsample()
            log_q = log_q + q_v.log_prob(v)
            z, v, grad = leapfrog(z, v, log_p, eps[t], self.num_leapfrog,
                                  create_graph=differentiable, grad=grad)
            if not bool(torch.isfinite(z).all() and torch.isfinite(v).all()):
                raise RuntimeError(f"HamiltonianGuide: the leapfrog trajectory of transition {t + 1} "
                                   "diverged (non-finite values); lower the step size")
            hz = torch.cat([h.expand(*z.shape[:-1], h.shape[-1]), z], dim=-1)
            log_q = log_q - self._reverse(t, hz).log_prob(v)
        if not bool(torch.isfinite(log_q).all()):
            raise RuntimeError("HamiltonianGuide: non-finite log density after the transitions; "
                               "lower the step size")
        size = frame.full_size or frame.size
        with pyro.plate(frame.name, size, subsample=torch.arange(frame.size, device=x.device),
                        dim=frame.dim):
            return pyro.sample(self.site, dist.Delta(z, log_density=log_q, event_dim=1))
