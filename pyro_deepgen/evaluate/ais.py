r"""Annealed importance sampling (AIS) estimates of :math:`\log p(x)`, and
bidirectional Monte Carlo (BDMC) bounds on simulated data.

AIS (Neal, "Annealed Importance Sampling", 2001, arXiv:physics/9803008)
moves chains along the geometric path
:math:`f_\beta(z) = \pi_0(z)^{1-\beta}\, p(x, z)^\beta`, :math:`0 = \beta_0 < \dots
< \beta_T = 1`, from a base density :math:`\pi_0` (the prior :math:`p(z)`, or
the guide :math:`q(z|x)`) to the unnormalized posterior :math:`p(x, z)`. Each
chain's weight :math:`\sum_t (\beta_t - \beta_{t-1}) \log \frac{p(x, z_{t-1})}
{\pi_0(z_{t-1})}` is an unbiased estimate of :math:`p(x)` in expectation; the
transitions are Hamiltonian Monte Carlo steps that leave each :math:`f_{\beta_t}`
invariant, as in Wu, Burda, Salakhutdinov & Grosse, "On the Quantitative
Analysis of Decoder-Based Generative Models", 2017, arXiv:1611.04273.

BDMC (Grosse, Ghahramani & Adams, "Sandwiching the marginal likelihood using
bidirectional Monte Carlo", 2015, arXiv:1511.02543) runs AIS forward (a
stochastic lower bound) and in reverse from the exact posterior sample that
generated simulated data (a stochastic upper bound); the gap between them
bounds the error of both.

The log densities come from Pyro traces of the user's model (and guide): every
latent site is set to its value, and the log probabilities of the observed
sites (the likelihood) and of the latent sites (the prior) are summed per
datapoint. Latent sites with constrained support are moved in unconstrained
space (``biject_to``) with the Jacobian in the density, so any model that
follows the pyro_deepgen convention and has continuous latents works.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import pyro
import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import prune_subsample_sites
from torch.distributions import biject_to
from torch.utils.data import Dataset, TensorDataset

from pyro_deepgen.evaluate.batches import iterate_batches, model_args
from pyro_deepgen.infer.weights import PARTICLE_PLATE, Layout, find_data_plate
from pyro_deepgen.mcmc import adapt_step_size, continuous_latent_sites, hmc, hmc_transition

__all__ = ["AISEstimate", "BDMCResult", "annealing_schedule", "ais_log_likelihood", "bdmc"]

SCHEDULES = ("sigmoid", "linear")
_ADAPT_RATE = 1.0  # log step size moves by this times (acceptance - target) per transition
_TUNING_TRANSITIONS = 10  # at beta = 0, on draws independent of the AIS chains


def annealing_schedule(num_steps: int, kind: str = "sigmoid", delta: float = 4.0) -> torch.Tensor:
    r"""The ``num_steps + 1`` inverse temperatures :math:`0 = \beta_0 < \dots < \beta_T = 1`
    (float64): ``"linear"``, or ``"sigmoid"``, :math:`\sigma(\delta(2t/T - 1))`
    rescaled to [0, 1], which spends more steps near both ends (Grosse et al. 2015).

    Example:
        >>> annealing_schedule(4, "linear")
        tensor([0.0000, 0.2500, 0.5000, 0.7500, 1.0000], dtype=torch.float64)
    """
    _check_steps(num_steps)
    if kind == "linear":
        return torch.linspace(0, 1, num_steps + 1, dtype=torch.float64)
    if kind == "sigmoid":
        s = torch.sigmoid(torch.linspace(-delta, delta, num_steps + 1, dtype=torch.float64))
        return (s - s[0]) / (s[-1] - s[0])
    raise ValueError(f"unknown annealing schedule {kind!r}; valid: {', '.join(SCHEDULES)}")


@dataclass
class AISEstimate:
    r"""Per-datapoint results of AIS, each a CPU tensor with ``N`` rows.

    ``log_likelihood`` is the log of the mean weight over chains (for a reverse
    run, minus the log of the mean reverse weight: an upper bound), ``stderr``
    its delta-method standard error, :math:`\mathrm{sd}(w) / (\sqrt{C}\,\bar w)`;
    ``log_weights`` the ``(N, C)`` per-chain log weights; ``accept_rate`` the mean
    HMC acceptance probability, ``step_size`` the final step size, and
    ``divergences`` the number of proposals with a non-finite energy (rejected).
    """

    log_likelihood: torch.Tensor
    stderr: torch.Tensor
    log_weights: torch.Tensor
    accept_rate: torch.Tensor
    step_size: torch.Tensor
    divergences: torch.Tensor

    @property
    def ess(self) -> torch.Tensor:
        """The effective sample size of each datapoint's weights, in [1, C]."""
        w = torch.softmax(self.log_weights, dim=-1)
        return 1.0 / w.pow(2).sum(-1)


@dataclass
class BDMCResult:
    """Bidirectional Monte Carlo on data simulated from the model: ``x`` (the
    simulated observations), ``z`` (the latent values that generated them, per
    site), and the ``forward`` (lower bound) and ``reverse`` (upper bound) AIS
    runs; ``lower``, ``upper`` and ``gap`` are per datapoint."""

    x: torch.Tensor
    z: dict[str, torch.Tensor]
    forward: AISEstimate
    reverse: AISEstimate

    @property
    def lower(self) -> torch.Tensor:
        return self.forward.log_likelihood

    @property
    def upper(self) -> torch.Tensor:
        return self.reverse.log_likelihood

    @property
    def gap(self) -> torch.Tensor:
        return self.upper - self.lower


def _check_steps(num_steps: int) -> None:
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be an integer >= 1; got {num_steps!r}")


def _check_options(num_steps: int, num_leapfrog: int, step_size: float, num_chains: int,
                   target_accept: float, tuning_chains: int) -> None:
    _check_steps(num_steps)
    if not isinstance(num_leapfrog, int) or num_leapfrog < 1:
        raise ValueError(f"num_leapfrog must be an integer >= 1; got {num_leapfrog!r}")
    if not (isinstance(step_size, (int, float)) and math.isfinite(step_size) and step_size > 0):
        raise ValueError(f"step_size must be a finite number > 0; got {step_size!r}")
    if not isinstance(num_chains, int) or num_chains < 1:
        raise ValueError(f"num_chains must be an integer >= 1; got {num_chains!r}")
    if not isinstance(tuning_chains, int) or tuning_chains < 1:
        raise ValueError(f"tuning_chains must be an integer >= 1; got {tuning_chains!r}")
    if not 0 < target_accept < 1:
        raise ValueError(f"target_accept must be in (0, 1); got {target_accept!r}")


def _betas(num_steps: int, schedule: str | Sequence[float] | torch.Tensor) -> list[float]:
    if isinstance(schedule, str):
        return annealing_schedule(num_steps, schedule).tolist()
    betas = [float(b) for b in schedule]
    if len(betas) != num_steps + 1 or betas[0] != 0 or betas[-1] != 1 or any(
            not b1 > b0 for b0, b1 in zip(betas, betas[1:])):
        raise ValueError(f"a custom schedule must be {num_steps + 1} increasing numbers from 0 "
                         f"to 1 (num_steps + 1); got {len(betas)} from {betas[0]} to {betas[-1]}")
    return betas


class _SetLatents(Messenger):
    """Sets each latent site to the image of its unconstrained value under
    ``biject_to(support)`` and records the log-Jacobian, summed per datapoint."""

    def __init__(self, values: dict[str, torch.Tensor]):
        super().__init__()
        self.values = values
        self.log_det: torch.Tensor | float = 0.0

    def _pyro_sample(self, msg: dict) -> None:
        if msg["is_observed"] or msg["name"] not in self.values:
            return
        u = self.values[msg["name"]]
        t = biject_to(msg["fn"].support)
        z = t(u)
        ladj = t.log_abs_det_jacobian(u, z)
        self.log_det = self.log_det + ladj.reshape(ladj.shape[:2] + (-1,)).sum(-1)
        msg["value"] = z


class _Path:
    """The annealing path of one batch as functions of the flat unconstrained
    state ``u`` of shape ``(chains, batch, dim)``."""

    def __init__(self, model: Callable, guide: Callable | None, args: tuple, num_chains: int,
                 data_plate: str | None = None):
        self.model, self.guide, self.args = model, guide, args
        self.plate = pyro.plate(PARTICLE_PLATE, num_chains, dim=-2)
        with poutine.block():
            plain = prune_subsample_sites(poutine.trace(model).get_trace(*args))
        frame = find_data_plate(plain, data_plate)
        if frame is None:
            raise ValueError("AIS estimates log p(x) per datapoint and needs a vectorized data plate that "
                             "every observed site sits in, e.g. `with pyro.plate('data', batch_size):`")
        sites = [s for s in plain.nodes.values() if s["type"] == "sample"]
        for s in sites:
            plates = [f.name for f in s["cond_indep_stack"] if f.vectorized]
            if plates != [frame.name] or frame.dim != -1:
                raise ValueError(
                    f"AIS chains move each datapoint's latents under one data plate at dim -1, but site "
                    f"{s['name']!r} is in the plates {plates} (data plate {frame.name!r} at dim "
                    f"{frame.dim}); global sites and nested plates are not supported by ais()")
        trace = prune_subsample_sites(poutine.trace(self.plate(model)).get_trace(*args))
        latents = continuous_latent_sites(trace, "AIS", hint="estimate log p(x) by importance "
                                          "sampling (log_likelihood) instead")
        self.num_chains, self.batch = num_chains, frame.size
        self.reduce = Layout(num_chains, 1, frame, frame.size, 1.0, use_scale=False).site
        self.names = [s["name"] for s in latents]
        u = self.unconstrain(trace.nodes)
        self.dtype, self.device = u[self.names[0]].dtype, u[self.names[0]].device
        self.shapes = {n: v.shape[2:] for n, v in u.items()}
        self.sizes = [math.prod(self.shapes[n]) for n in self.names]

    def unconstrain(self, nodes: dict) -> dict[str, torch.Tensor]:
        """The unconstrained values of the latent sites in a trace's ``nodes``,
        each of shape ``(C, B, ...)`` (values without the chain dim are expanded)."""
        out = {}
        for n in self.names:
            site = nodes[n]
            v = site["value"].detach()
            v = v.expand((self.num_chains, self.batch) + v.shape[v.dim() - site["fn"].event_dim:])
            out[n] = biject_to(site["fn"].support).inv(v)
        return out

    def flatten(self, u: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([u[n].reshape(self.num_chains, self.batch, -1) for n in self.names], -1)

    def split(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = flat.split(self.sizes, dim=-1)
        return {n: p.reshape(flat.shape[:2] + self.shapes[n]) for n, p in zip(self.names, parts)}

    def initial(self) -> torch.Tensor:
        """Draws from the base density: the prior, or the guide."""
        if self.guide is None:
            trace = poutine.trace(self.plate(self.model)).get_trace(*self.args)
        else:
            trace = poutine.trace(self.plate(self.guide)).get_trace(*self.args)
            missing = [n for n in self.names if n not in trace.nodes]
            if missing:
                raise ValueError(f"the guide has no site for the model's latent sites {missing}")
        return self.flatten(self.unconstrain(prune_subsample_sites(trace).nodes)).detach()

    def _terms(self, fn: Callable, u: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """``fn``'s log densities of the latent and of the observed sites, and the
        log-Jacobian, each ``(C, B)`` or broadcastable to it."""
        setter = _SetLatents(u)
        trace = prune_subsample_sites(poutine.trace(setter(self.plate(fn))).get_trace(*self.args))
        latent = observed = torch.zeros(())
        for site in trace.nodes.values():
            if site["type"] != "sample":
                continue
            if site["is_observed"]:
                observed = observed + self.reduce(site)
            elif site["name"] in u:
                latent = latent + self.reduce(site)
        return latent, observed, setter.log_det

    def log_densities(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r"""``(log pi_0(u), log p(x, u) - log pi_0(u))``, each ``(C, B)``, so that
        :math:`\log f_\beta = \log\pi_0 + \beta (\log p - \log\pi_0)`."""
        u = self.split(flat)
        log_prior, log_lik, log_det = self._terms(self.model, u)
        shape = (self.num_chains, self.batch)
        if self.guide is None:
            return (log_prior + log_det).expand(shape), log_lik.expand(shape)
        try:
            log_q, _, _ = self._terms(self.guide, u)
        except (NotImplementedError, KeyError) as e:  # no inverse; Pyro's cache miss
            raise ValueError("AIS from the guide needs its density at any z, which this guide "
                             "cannot evaluate (a flow without an inverse?); pass guide=None to "
                             f"anneal from the prior ({e})") from e
        return (log_q + log_det).expand(shape), (log_prior + log_lik - log_q).expand(shape)


class _Tempered:
    r"""The log density :math:`\log f_\beta = \log\pi_0 + \beta (\log p - \log\pi_0)`
    of the path at one temperature, per chain, for the HMC transition; keeps the
    two terms of its latest evaluation (the proposal's, after a transition)."""

    def __init__(self, path: _Path, beta: float):
        self.path, self.beta = path, beta
        self.terms: tuple[torch.Tensor, torch.Tensor] | None = None

    def __call__(self, u: torch.Tensor) -> torch.Tensor:
        base, ratio = self.path.log_densities(u)
        self.terms = (base.detach(), ratio.detach())
        return base if self.beta == 0 else base + self.beta * ratio


@dataclass
class _Run:
    log_w: torch.Tensor  # (C, B)
    accept: torch.Tensor  # (B,) summed acceptance probability
    transitions: int
    eps: torch.Tensor  # (B,) final
    eps_history: list  # step size of each transition, (B,) each
    divergences: torch.Tensor  # (B,)


def _check_finite(terms: tuple, what: str) -> None:
    bad = torch.isnan(terms[0]) | torch.isnan(terms[1])
    if bad.any():
        cols = bad.any(0).nonzero().flatten().tolist()
        raise ValueError(
            f"AIS: the model's log density is NaN at {what} for {int(bad.sum())} chains "
            f"(datapoints {cols[:10]} of the batch); check the model and its parameters for NaN")


def _tune(path: _Path, eps: torch.Tensor, num_leapfrog: int, target_accept: float) -> torch.Tensor:
    """Step sizes adapted at beta = 0 on draws from the base density that are
    then discarded, so that annealing starts with a step size that suits it."""
    u = path.initial()
    with torch.no_grad():
        terms = tuple(t.detach() for t in path.log_densities(u))
    _check_finite(terms, "the initial state")
    return hmc(u, _Tempered(path, 0.0), eps, _TUNING_TRANSITIONS, num_leapfrog, target_accept,
               _ADAPT_RATE)[1]


def _anneal(path: _Path, u: torch.Tensor, betas: list[float],
            eps: torch.Tensor | list[torch.Tensor], num_leapfrog: int, target_accept: float = 0.65,
            tuning: int = 0, reverse: bool = False) -> _Run:
    """Forward AIS from ``u`` ~ the base density, or (``reverse``) reverse AIS
    from ``u`` ~ the posterior through the same temperatures backwards.

    ``eps`` is the step size per datapoint, adapted after each transition from
    the acceptance of the last ``tuning`` chains, which are independent of the
    others and left out of the weights; or (``tuning=0``) a list with the step
    size of each transition, in the forward order."""
    with torch.no_grad():
        terms = tuple(t.detach() for t in path.log_densities(u))
    _check_finite(terms, "the exact posterior sample" if reverse else "the initial state")
    num_steps = len(betas) - 1
    keep = path.num_chains - tuning  # the AIS chains; the rest only tune the step size
    log_w = torch.zeros_like(terms[0][:keep])
    accept = torch.zeros_like(terms[0][0])
    divergences = torch.zeros_like(accept, dtype=torch.long)
    history = []
    for t in (range(num_steps, 0, -1) if reverse else range(1, num_steps + 1)):
        step = betas[t] - betas[t - 1]
        log_w = log_w - step * terms[1][:keep] if reverse else log_w + step * terms[1][:keep]
        if t == (1 if reverse else num_steps):
            break  # no transition after the last weight update
        e = eps[t - 2] if reverse else eps if tuning else eps[t - 1]
        beta = betas[t - 1] if reverse else betas[t]
        target = _Tempered(path, beta)
        step = hmc_transition(u, target, e, num_leapfrog)
        u = step.z
        if target.terms is not None:  # the proposal's terms, kept where it was accepted
            terms = tuple(torch.where(step.accepted, t1, t0) for t0, t1 in zip(terms, target.terms))
        history.append(e)
        accept = accept + step.accept_prob[:keep].mean(0)
        divergences = divergences + step.diverged[:keep].sum(0)
        if tuning:  # from the tuning chains only: the AIS chains' kernels do not depend on them
            eps = adapt_step_size(e, step.accept_prob[keep:], target_accept, _ADAPT_RATE)
    if torch.isnan(log_w).any():
        raise ValueError("AIS produced NaN log weights; check the model for NaN log densities")
    if history:
        final = history[-1]
    else:  # one step: no transitions
        final = eps if tuning else eps[0] if eps else torch.full_like(accept, math.nan)
    return _Run(log_w, accept, len(history), final, history, divergences)


def _forward(model: Callable, guide: Callable | None, args: tuple, betas: list[float],
             num_chains: int, num_leapfrog: int, step_size: float, adapt: bool, tuning_chains: int,
             target_accept: float) -> _Run:
    """Forward AIS on one batch: ``num_chains`` chains, plus ``tuning_chains``
    that adapt the step size when ``adapt``."""
    tuning = tuning_chains if adapt else 0
    path = _Path(model, guide, args, num_chains + tuning)
    eps = torch.full((path.batch,), float(step_size), dtype=path.dtype, device=path.device)
    if tuning:
        eps = _tune(path, eps, num_leapfrog, target_accept)
    else:
        eps = [eps] * (len(betas) - 1)
    return _anneal(path, path.initial(), betas, eps, num_leapfrog, target_accept, tuning)


def _estimate(runs: list[_Run], reverse: bool) -> AISEstimate:
    log_w = torch.cat([r.log_w.T.detach().cpu() for r in runs])  # (N, C)
    c = log_w.shape[1]
    lme = torch.logsumexp(log_w, dim=-1) - math.log(c)
    w = torch.exp(log_w - log_w.max(-1, keepdim=True).values)
    se = w.std(-1) / (math.sqrt(c) * w.mean(-1)) if c > 1 else torch.full_like(lme, math.nan)
    return AISEstimate(
        log_likelihood=-lme if reverse else lme, stderr=se, log_weights=log_w,
        accept_rate=torch.cat([(r.accept / max(r.transitions, 1)).cpu() for r in runs]),
        step_size=torch.cat([r.eps.cpu() for r in runs]),
        divergences=torch.cat([r.divergences.cpu() for r in runs]))


def _dataset(data: Dataset | torch.Tensor) -> Dataset:
    return TensorDataset(data) if torch.is_tensor(data) else data


def _rows(batch_size: int, num_chains: int, max_rows: int) -> int:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    return max(1, min(batch_size, max_rows // num_chains))


def ais_log_likelihood(
    model: Callable,
    guide: Callable | None,
    data: Dataset | torch.Tensor,
    num_steps: int = 500,
    num_leapfrog: int = 5,
    step_size: float = 0.1,
    num_chains: int = 16,
    schedule: str | Sequence[float] = "sigmoid",
    adapt_step_size: bool = True,
    target_accept: float = 0.65,
    tuning_chains: int = 4,
    batch_size: int = 100,
    max_rows: int = 16384,
    pass_labels: bool = False,
    device: torch.device | str | None = None,
) -> AISEstimate:
    r"""Estimates :math:`\log p(x)` of each datapoint by annealed importance
    sampling with HMC transitions (Neal, "Annealed Importance Sampling", 2001,
    arXiv:physics/9803008; Wu, Burda, Salakhutdinov & Grosse, "On the
    Quantitative Analysis of Decoder-Based Generative Models", 2017,
    arXiv:1611.04273).

    Each datapoint gets ``num_chains`` chains that start from the prior (or from
    ``guide``'s :math:`q(z|x)` when one is given) and pass through
    ``num_steps + 1`` distributions :math:`f_\beta \propto \pi_0^{1-\beta} p(x, z)^\beta`;
    between two temperatures one HMC transition of ``num_leapfrog`` leapfrog
    steps (:func:`pyro_deepgen.mcmc.hmc_transition`, with Pyro's ``velocity_verlet``)
    is accepted or rejected per chain. The estimate is the log of the mean
    weight over chains; its expectation is a lower bound on :math:`\log p(x)` (Jensen) that tightens as ``num_steps`` grows.
    ``num_steps=1`` is plain importance sampling from :math:`\pi_0`.

    With ``adapt_step_size``, each datapoint's step size (shared by its chains)
    starts from ``step_size`` tuned by 10 transitions at :math:`\beta = 0`, then
    moves after every transition toward the acceptance rate ``target_accept``
    (as Wu et al. do). The acceptance that drives it comes from
    ``tuning_chains`` extra chains per datapoint that anneal alongside but
    are left out of the estimate: the weighted chains' kernels never depend on
    their own states, so their weights stay unbiased. (Adapting from the
    weighted chains themselves measurably biases the estimate upward.) With
    ``adapt_step_size=False`` every transition uses ``step_size``.

    Works for any model whose sample sites all sit under one data plate at
    ``dim=-1`` (vectorizable over an outer plate) with continuous latent sites;
    constrained latents move in unconstrained space. A model with global sites or
    nested plates gets an error that names the site.
    Datapoints are processed ``batch_size`` at a time, with at most ``max_rows``
    chains x datapoints per pass.

    :param guide: ``None`` to anneal from the prior, or a guide to anneal from
        :math:`q(z|x)` (its density must be computable at any ``z``).
    :param data: a dataset, or a tensor of datapoints (rows).
    :param schedule: ``"sigmoid"``, ``"linear"`` (see :func:`annealing_schedule`)
        or ``num_steps + 1`` increasing inverse temperatures from 0 to 1.
    :returns: an :class:`AISEstimate`; ``.log_likelihood`` has shape ``(N,)``.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model(x):
        ...     with pyro.plate("data", x.shape[0], dim=-1):
        ...         z = pyro.sample("z", dist.Normal(x.new_zeros(1), 1.).to_event(1))
        ...         pyro.sample("x", dist.Normal(z, 1.).to_event(1), obs=x)
        >>> pyro.set_rng_seed(0)
        >>> x = torch.tensor([[0.5], [-1.0]])
        >>> est = ais_log_likelihood(model, None, x, num_steps=200, num_chains=16)
        >>> exact = dist.Normal(0., 2 ** 0.5).log_prob(x).squeeze(-1)
        >>> bool(((est.log_likelihood - exact).abs() < 4 * est.stderr + 0.01).all())
        True
    """
    _check_options(num_steps, num_leapfrog, step_size, num_chains, target_accept, tuning_chains)
    betas = _betas(num_steps, schedule)
    runs = []
    rows = _rows(batch_size, num_chains + tuning_chains * adapt_step_size, max_rows)
    with pyro.validation_enabled(False):
        for batch in iterate_batches(_dataset(data), rows):
            args = model_args(batch, pass_labels, device)
            runs.append(_forward(model, guide, args, betas, num_chains, num_leapfrog, step_size,
                                 adapt_step_size, tuning_chains, target_accept))
    return _estimate(runs, reverse=False)


class _Simulate(Messenger):
    """Samples the observed site ``site`` from the model instead of observing it."""

    def __init__(self, site: str):
        super().__init__()
        self.site = site

    def _pyro_sample(self, msg: dict) -> None:
        if msg["name"] == self.site and msg["is_observed"]:
            msg["is_observed"] = False
            msg["value"] = None


def bdmc(
    model: Callable,
    guide: Callable | None,
    data: Dataset | torch.Tensor,
    num_steps: int = 500,
    num_leapfrog: int = 5,
    step_size: float = 0.1,
    num_chains: int = 16,
    schedule: str | Sequence[float] = "sigmoid",
    adapt_step_size: bool = True,
    target_accept: float = 0.65,
    tuning_chains: int = 4,
    batch_size: int = 100,
    max_rows: int = 16384,
    pass_labels: bool = False,
    device: torch.device | str | None = None,
    observed_site: str = "x",
) -> BDMCResult:
    r"""Bidirectional Monte Carlo (Grosse, Ghahramani & Adams, "Sandwiching the
    marginal likelihood using bidirectional Monte Carlo", 2015, arXiv:1511.02543;
    Wu et al. 2017, arXiv:1611.04273) on data simulated from the model.

    For each row of ``data`` (which sets only the shape, and the labels with
    ``pass_labels``), draws :math:`z \sim p(z)` and :math:`x \sim p(x|z)` by running
    the model with the site ``observed_site`` unobserved. Forward AIS (as in
    :func:`ais_log_likelihood`) gives a stochastic lower bound on :math:`\log p(x)`;
    reverse AIS, started from the generating :math:`z` (an exact posterior sample)
    and run through the same temperatures and step sizes backwards without
    adaptation, gives a stochastic upper bound, minus the log of the mean
    reverse weight. Both hold in expectation; the gap shrinks as ``num_steps`` grows.
    All reverse chains of a datapoint start from its one exact sample.

    :returns: a :class:`BDMCResult` with ``lower``, ``upper`` and ``gap``, each ``(N,)``.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model(x):
        ...     with pyro.plate("data", x.shape[0], dim=-1):
        ...         z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.).to_event(1))
        ...         pyro.sample("x", dist.Normal(z, 0.5).to_event(1), obs=x)
        >>> res = bdmc(model, None, torch.zeros(3, 2), num_steps=20, num_chains=4)
        >>> res.lower.shape, res.upper.shape, res.gap.shape
        (torch.Size([3]), torch.Size([3]), torch.Size([3]))
    """
    _check_options(num_steps, num_leapfrog, step_size, num_chains, target_accept, tuning_chains)
    betas = _betas(num_steps, schedule)
    forward, reverse, xs, zs = [], [], [], {}
    rows = _rows(batch_size, num_chains + tuning_chains * adapt_step_size, max_rows)
    with pyro.validation_enabled(False):
        for batch in iterate_batches(_dataset(data), rows):
            args = model_args(batch, pass_labels, device)
            with torch.no_grad():
                sim = prune_subsample_sites(
                    poutine.trace(_Simulate(observed_site)(model)).get_trace(*args))
            if observed_site not in sim.nodes:
                raise ValueError(f"the model has no site {observed_site!r} to simulate")
            x = sim.nodes[observed_site]["value"].detach()
            args = (x,) + args[1:]
            fwd = _forward(model, guide, args, betas, num_chains, num_leapfrog, step_size,
                           adapt_step_size, tuning_chains, target_accept)
            path = _Path(model, guide, args, num_chains)
            z = {n: sim.nodes[n]["value"].detach() for n in path.names}
            u = path.flatten(path.unconstrain(sim.nodes))
            rev = _anneal(path, u, betas, fwd.eps_history, num_leapfrog, reverse=True)
            forward.append(fwd)
            reverse.append(rev)
            xs.append(x.cpu())
            for n, v in z.items():
                zs.setdefault(n, []).append(v.cpu())
    return BDMCResult(x=torch.cat(xs), z={n: torch.cat(v) for n, v in zs.items()},
                      forward=_estimate(forward, reverse=False),
                      reverse=_estimate(reverse, reverse=True))
