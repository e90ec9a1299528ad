"""Conformance: every objective on the catalogue of valid Pyro models (pyro_models.py).

* Each objective runs on each model, or raises its documented error, naming the site.
* IWAE(k=1) gives Pyro's ``Trace_ELBO`` loss and gradients for the same seed, and IWAE(k)
  gives ``RenyiELBO(alpha=0)``'s bound, under global sites, plates, scales, masks and factors.
* Estimators are unbiased against exact gradients computed by enumerating the discrete
  latents, on models with global and local sites, scales and guide factors.
"""

from __future__ import annotations

import itertools
import math
import re
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, RenyiELBO, Trace_ELBO
from pyro.poutine.util import site_is_subsample

from pyro_models import CASES, by_name
from pyro_deepgen.infer import (IWAE, MCEM, NVIL, RWS, STL, VIMCO, MCMCRefinedELBO, Reinforce,
                                WakeSleep)

OBJECTIVES = {
    "iwae-5": lambda: IWAE(5),
    "iwae-1": lambda: IWAE(1),
    "iwae-dreg-5": lambda: IWAE(5, gradient="dreg"),
    "stl": lambda: STL(),
    "reinforce": lambda: Reinforce(),
    "nvil": lambda: NVIL(),
    "vimco-5": lambda: VIMCO(5),
    "rws-5": lambda: RWS(5),
    "rws-5-both": lambda: RWS(5, phi="both"),
    "wake-sleep": lambda: WakeSleep(),
    "mcem": lambda: MCEM(num_steps=1, num_leapfrog=2),
    "mcmc-refined": lambda: MCMCRefinedELBO(num_steps=1, num_leapfrog=2),
}
HMC = ("mcem", "mcmc-refined")
PATH = ("iwae-dreg-5", "stl", "mcem", "mcmc-refined")  # need rsample
SLEEP = ("rws-5-both", "wake-sleep")


def expected_error(case, name: str) -> str | None:
    """The documented error of objective ``name`` on ``case`` (a regex), or None."""
    if name in PATH and not case.reparam:
        return r"needs reparameterized guide sites, but \[.*'\w+'.*\] cannot be reparameterized"
    if name in HMC and not case.convention:
        # MCEM and MCMC-refined move one vector-valued latent per datapoint by HMC
        return r"site[= ].*'\w+'"
    if name == "iwae-dreg-5" and case.guide_only:
        return r"DReG gradients need a guide whose sites are all sampled, but \['\w+'\]"
    if name == "iwae-dreg-5" and case.name == "param_shared_model_guide":
        return r"registered in both the model and the guide: \['shared_scale'\]"
    if name in SLEEP and case.factor:
        return r"sleep phase .* cannot follow the pyro.factor sites \['\w+'\]; use phi='wake'"
    if name in SLEEP and case.no_obs_arg:
        return r"dreamed observation of site 'x' .* no argument of the model holds that data"
    return None


def run(case, objective, steps: int = 2) -> float:
    pyro.clear_param_store()
    svi = SVI(case.model, case.guide, pyro.optim.Adam({"lr": 1e-3}), objective)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pyro's validation warnings (e.g. auxiliary guide sites)
        for _ in range(steps):
            loss = svi.step(*case.args, **case.kwargs)
    return loss


@pytest.mark.parametrize("name", list(OBJECTIVES))
@pytest.mark.parametrize("case", CASES, ids=str)
def test_every_objective_runs_or_raises_its_documented_error(case, name):
    pyro.set_rng_seed(0)
    error = expected_error(case, name)
    if error is None:
        loss = run(case, OBJECTIVES[name]())
        assert math.isfinite(loss)
    else:
        with pytest.raises(ValueError, match=error):
            run(case, OBJECTIVES[name]())


def test_catalogue_is_large_and_varied():
    assert len(CASES) >= 40
    flags = ["discrete", "guide_only", "dynamic", "factor", "no_obs_arg", "convention"]
    assert all(any(getattr(c, f) for c in CASES) for f in flags)
    assert any(not c.reparam for c in CASES)


# ---------------------------------------------------------------------- Pyro's own answers


def _grads() -> dict[str, torch.Tensor]:
    store = pyro.get_param_store()
    return {n: store.get_param(n).unconstrained().grad.clone() for n in store.keys()
            if store.get_param(n).unconstrained().grad is not None}


def _loss_and_grads(objective, case, seed: int):
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss = objective.loss_and_grads(case.model, case.guide, *case.args, **case.kwargs)
    return loss, _grads()


# A Rao-Blackwellized learning signal differs from Trace_ELBO's draw by draw when the guide
# has factors next to score-function sites: Trace_ELBO leaves the guide's factors out of the
# signal (biased: see test_guide_factor_in_the_learning_signal_is_unbiased), we keep them.
SIGNAL_DIFFERS = {"guide_factor_discrete"}


@pytest.mark.parametrize("case", CASES, ids=str)
def test_iwae_1_gives_trace_elbo_loss_and_gradients(case):
    for seed in (0, 1):
        loss, grads = _loss_and_grads(IWAE(num_particles=1), case, seed)
        want_loss, want = _loss_and_grads(Trace_ELBO(), case, seed)
        assert loss == pytest.approx(want_loss, rel=1e-6, abs=1e-6)
        if case.name in SIGNAL_DIFFERS:
            continue
        assert set(grads) == set(want)
        for n in want:
            torch.testing.assert_close(grads[n], want[n], rtol=1e-5, atol=1e-6, msg=f"{case}: {n}")


def _nesting(case) -> int:
    trace = poutine.trace(case.model).get_trace(*case.args, **case.kwargs)
    dims = [f.dim for s in trace.nodes.values() if s["type"] == "sample"
            for f in s["cond_indep_stack"] if f.vectorized]
    return -min(dims) if dims else 0


def _common_plates(case) -> int:
    pyro.clear_param_store()
    trace = poutine.trace(case.model).get_trace(*case.args, **case.kwargs)
    stacks = [{f.name for f in s["cond_indep_stack"] if f.vectorized} for s in trace.nodes.values()
              if s["type"] == "sample" and not site_is_subsample(s)]
    return len(set.intersection(*stacks)) if stacks else 0


# RenyiELBO keeps every plate common to all sites apart (a data plate and an inner plate
# shared by all sites: one bound per cell), applies a subsampling scale inside the
# log-mean-exp, and finds the common plates from the model's sites alone, adding a global
# guide site's log density to every datapoint's weight (guide_observed_site). Here the units
# are the data plate's entries, the scale is outside, and a global guide site makes the
# batch one unit. Elsewhere the bounds are the same.
RENYI_CASES = [c for c in CASES if not c.dynamic and "subsample" not in c.name
               and _common_plates(c) <= 1 and c.name != "guide_observed_site"]


@pytest.mark.parametrize("case", RENYI_CASES, ids=str)
@pytest.mark.parametrize("make", [lambda n: IWAE(4, max_plate_nesting=n),
                                  lambda n: VIMCO(4, max_plate_nesting=n),
                                  lambda n: RWS(4, max_plate_nesting=n)], ids=["iwae", "vimco", "rws"])
def test_importance_weighted_bound_is_renyi_elbo_alpha_0(case, make):
    """With global sites, the joint bound over the batch; with every site in a common
    plate, one bound per entry of it: RenyiELBO(alpha=0)'s, draw for draw."""
    n = _nesting(case)
    for seed in (0, 1):
        pyro.clear_param_store()
        pyro.set_rng_seed(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ours = make(n).loss(case.model, case.guide, *case.args, **case.kwargs)
            pyro.set_rng_seed(seed)
            renyi = RenyiELBO(alpha=0, num_particles=4, vectorize_particles=True, max_plate_nesting=n)
            want = renyi.loss(case.model, case.guide, *case.args, **case.kwargs)
        assert ours == pytest.approx(want, rel=1e-5, abs=1e-5), case


# ---------------------------------------------------------------------- exact answers by enumeration


def _latent_states(case):
    """Every joint value of the guide's latent sites (all discrete), as dicts."""
    pyro.set_rng_seed(0)
    trace = poutine.trace(case.guide).get_trace(*case.args, **case.kwargs)
    sites = [s for s in trace.nodes.values()
             if s["type"] == "sample" and not s["is_observed"] and not site_is_subsample(s)]
    cells = []
    for s in sites:
        fn = s["fn"]
        while isinstance(fn, dist.Independent):
            fn = fn.base_dist
        support = fn.enumerate_support(expand=False).reshape(-1).tolist()
        cells.append((s["name"], s["value"].shape, support))
    per_site = [list(itertools.product(sup, repeat=math.prod(shape) if shape else 1))
                for _, shape, sup in cells]
    for combo in itertools.product(*per_site):
        yield {name: torch.tensor(vals, dtype=torch.get_default_dtype()).reshape(shape)
               for (name, shape, _), vals in zip(cells, combo)}


def _terms(case, state):
    """For one joint latent value: the guide's sampling log probability (unscaled), and the
    scaled log densities as (global total, per-datapoint tensor or None: sites in "data")."""
    data = poutine.condition(case.model, data=state)
    guide = poutine.condition(case.guide, data=state)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gt = poutine.trace(guide).get_trace(*case.args, **case.kwargs)
        mt = poutine.trace(poutine.replay(data, trace=gt)).get_trace(*case.args, **case.kwargs)
    sample_log_q = sum(s["fn"].log_prob(s["value"]).sum() for n, s in gt.nodes.items()
                       if s["type"] == "sample" and n in state)
    glob, local = torch.zeros(()), torch.zeros(())
    for sign, tr in ((1.0, mt), (-1.0, gt)):
        tr.compute_log_prob()
        for s in tr.nodes.values():
            if s["type"] != "sample" or site_is_subsample(s):
                continue
            if any(f.name == "data" for f in s["cond_indep_stack"]):
                local = local + sign * s["log_prob"]
            else:
                glob = glob + sign * s["log_prob"].sum()
    return sample_log_q, glob, (local if local.dim() else None)


def _lme(t, dim=0):
    return torch.logsumexp(t, dim) - math.log(t.shape[dim])


def exact_objective(case, k: int, joint: bool):
    """E[IWAE_k] by enumerating every k-tuple of joint latent values (k=1: the ELBO);
    differentiable in the Pyro parameters. ``joint``: the model has sites outside the
    "data" plate, so that the batch is one unit; else one bound per datapoint."""
    pyro.clear_param_store()
    states = list(_latent_states(case))
    rows = [_terms(case, s) for s in states]
    total = torch.zeros(())
    for idx in itertools.product(range(len(states)), repeat=k):
        logp = sum(rows[i][0] for i in idx)
        if joint or rows[idx[0]][2] is None:
            lw = torch.stack([rows[i][1] + (rows[i][2].sum() if rows[i][2] is not None else 0.0)
                              for i in idx])
            value = _lme(lw)
        else:
            lw = torch.stack([rows[i][2] for i in idx])  # (k, B); no global sites
            value = _lme(lw).sum() + rows[idx[0]][1]
        total = total + logp.exp() * value
    return total


def exact_grads(case, k: int, joint: bool) -> dict[str, torch.Tensor]:
    objective = exact_objective(case, k, joint)
    store = pyro.get_param_store()
    names = list(store.keys())
    params = [store.get_param(n).unconstrained() for n in names]
    grads = torch.autograd.grad(objective, params, allow_unused=True)
    return {n: g for n, g in zip(names, grads) if g is not None}


def mc_grads(case, make, reps: int) -> dict[str, torch.Tensor]:
    objective = make()
    draws: dict[str, list] = {}
    for r in range(reps):
        pyro.clear_param_store()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            objective.loss_and_grads(case.model, case.guide, *case.args, **case.kwargs)
        for n, g in _grads().items():
            draws.setdefault(n, []).append(-g)
    return {n: torch.stack(v) for n, v in draws.items()}


def assert_unbiased(draws, exact, sigmas: float = 4.0):
    for n, want in exact.items():
        if n not in draws:
            assert want.abs().max() < 1e-9, n
            continue
        d = draws[n]
        mean, se = d.mean(0), d.std(0) / math.sqrt(d.shape[0])
        bad = (mean - want).abs() > sigmas * se + 1e-6
        assert not bad.any(), f"{n}: mean {mean}, exact {want}, se {se}"


DISCRETE = [c for c in CASES if c.discrete]
ESTIMATORS = {
    "iwae-1": (lambda: IWAE(1), 1),
    "reinforce-none": (lambda: Reinforce(baseline="none"), 1),
    "reinforce-average": (lambda: Reinforce(baseline="average"), 1),
    "nvil": (lambda: NVIL(normalize=False), 1),
    "iwae-2": (lambda: IWAE(2), 2),
    "vimco-2": (lambda: VIMCO(2), 2),
}


def _has_global_sites(case) -> bool:
    pyro.clear_param_store()
    trace = poutine.trace(case.model).get_trace(*case.args, **case.kwargs)
    return any(not any(f.name == "data" for f in s["cond_indep_stack"])
               for s in trace.nodes.values() if s["type"] == "sample" and not site_is_subsample(s))


@pytest.mark.parametrize("name", list(ESTIMATORS))
@pytest.mark.parametrize("case", DISCRETE, ids=str)
def test_estimators_are_unbiased_against_enumeration(case, name):
    make, k = ESTIMATORS[name]
    exact = exact_grads(case, k, _has_global_sites(case))
    pyro.set_rng_seed(1)
    mc_grads(case, make, 3)  # warm running baselines up on other draws (they must stay unbiased)
    assert_unbiased(mc_grads(case, make, 400), exact)


def test_exact_elbo_by_enumeration_matches_pyros_trace_enum_elbo():
    """The enumerator above against Pyro's TraceEnum_ELBO on a guide it enumerates."""
    from pyro.infer import TraceEnum_ELBO, config_enumerate
    case = by_name("poutine_scale_discrete")
    want = -TraceEnum_ELBO(max_plate_nesting=1).loss(case.model, config_enumerate(case.guide),
                                                      *case.args)
    assert exact_objective(case, 1, True).item() == pytest.approx(want, rel=1e-5)


def test_guide_factor_in_the_learning_signal_is_unbiased():
    """A guide factor that depends on a discrete sample belongs in that sample's learning
    signal; Trace_ELBO leaves it out and is biased here, IWAE(1) is not."""
    case = by_name("guide_factor_discrete")
    exact = exact_grads(case, 1, False)
    pyro.set_rng_seed(2)
    ours = mc_grads(case, lambda: IWAE(1), 1500)
    assert_unbiased(ours, exact)
    pyro.set_rng_seed(2)
    pyros = mc_grads(case, lambda: Trace_ELBO(), 1500)
    d = pyros["q_a"]
    assert (d.mean(0) - exact["q_a"]).abs() > 4 * d.std(0) / math.sqrt(d.shape[0])


# ---------------------------------------------------------------------- the bound with global sites

def _exact_log_px(xs: torch.Tensor) -> float:
    """log p(x) of the discrete_global_local case, summing its latents out."""
    total = []
    for b in (0.0, 1.0):
        lp = dist.Bernoulli(0.4).log_prob(torch.tensor(b))
        for x in xs:
            per_z = torch.stack([dist.Bernoulli(0.5).log_prob(torch.tensor(z))
                                 + dist.Normal(b + 2 * z - 1, 1.0).log_prob(x) for z in (0.0, 1.0)])
            lp = lp + torch.logsumexp(per_z, 0)
        total.append(lp)
    return torch.logsumexp(torch.stack(total), 0).item()


def test_iwae_rises_towards_log_px_with_a_global_latent_and_stays_below():
    case = by_name("discrete_global_local")  # a discrete global latent and a discrete local one
    xs = case.args[0]
    log_px = _exact_log_px(xs)
    with torch.no_grad():
        exact = [exact_objective(case, k, joint=True).item() for k in (1, 2, 3, 4)]
    assert all(a < b for a, b in zip(exact, exact[1:])), exact
    assert exact[-1] < log_px
    for k, want in ((1, exact[0]), (4, exact[3])):  # our estimator is that bound
        pyro.set_rng_seed(k)
        draws = torch.tensor([-IWAE(k).loss(case.model, case.guide, xs) for _ in range(1500)])
        se = draws.std() / math.sqrt(len(draws))
        assert abs(draws.mean() - want) < 4 * se, (k, draws.mean(), want, se)
    pyro.set_rng_seed(0)
    big = torch.tensor([-IWAE(2000).loss(case.model, case.guide, xs) for _ in range(10)])
    assert big.mean() < log_px + 4 * big.std() / math.sqrt(10)
    assert abs(big.mean() - log_px) < 0.02


# ---------------------------------------------------------------------- scales count once


def _scaled_case(c: float, subsample: bool, n: int = 4, copies: int = 150):
    """Per-datapoint Bernoulli latents; ``c`` from poutine.scale on model and guide, or
    (``subsample``) a data plate of 2n entries seen n at a time (scale 2)."""
    from pyro_models import Case
    base = torch.tensor([0.9, -1.1, 0.4, 2.0])[:n]
    x = base.repeat(copies * (2 if subsample else 1))
    size = len(x) // 2 if subsample else None

    def model(x):
        with poutine.scale(scale=c), pyro.plate("data", len(x), subsample_size=size) as i:
            z = pyro.sample("z", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(2.0 * z - 1.0, 1.0), obs=x[i])

    def guide(x):
        a = pyro.param("a", torch.tensor(0.5))
        with poutine.scale(scale=c), pyro.plate("data", len(x), subsample_size=size) as i:
            pyro.sample("z", dist.Bernoulli(logits=a * x[i] + 0.2))
    return Case("scaled", model, guide, (x,)), base


def _exact_scaled(base: torch.Tensor, c: float, k: int, copies: int) -> torch.Tensor:
    """d/da of the full data's expected objective: c inside each datapoint's bound."""
    a = torch.tensor(0.5, requires_grad=True)
    total = torch.zeros(())
    for x in base:
        q = dist.Bernoulli(logits=a * x + 0.2)
        for zs in itertools.product((0.0, 1.0), repeat=k):
            z = torch.tensor(zs)
            lw = c * (dist.Bernoulli(0.5).log_prob(z) + dist.Normal(2 * z - 1, 1.0).log_prob(x)
                      - q.log_prob(z))
            total = total + q.log_prob(z).sum().exp() * _lme(lw)
    return torch.autograd.grad(total * copies, a)[0]


@pytest.mark.parametrize("c, subsample", [(0.5, False), (2.0, False), (1.0, True)],
                         ids=["scale-0.5", "scale-2", "subsample"])
@pytest.mark.parametrize("name", ["reinforce-none", "nvil", "iwae-1", "iwae-2", "vimco-2"])
def test_score_term_is_scaled_once(c, subsample, name):
    make, k = ESTIMATORS[name]
    copies = 150
    case, base = _scaled_case(c, subsample, copies=copies)
    exact = _exact_scaled(base, c, k, copies * (2 if subsample else 1))
    pyro.set_rng_seed(3)
    mc_grads(case, make, 3)
    d = mc_grads(case, make, 200)["a"]
    mean, se = d.mean(), d.std() / math.sqrt(len(d))
    assert abs(mean - exact) < 4 * se, (mean, exact, se)
    # the old double scaling (c times the exact gradient) is far away
    if c != 1.0:
        assert abs(mean - c * exact) > 6 * se


def _mixed_case(c: float, subsample: bool = False):
    """s ~ Bernoulli, z | s ~ Normal, x | z ~ Normal: a discrete and a reparameterized site;
    ``subsample``: the data plate seen half at a time (scale 2)."""
    from pyro_models import Case
    x = torch.tensor([0.8, -1.3, 0.1]).repeat(100)
    size = len(x) // 2 if subsample else None

    def model(x):
        with poutine.scale(scale=c), pyro.plate("data", len(x), subsample_size=size) as i:
            x = x[i]
            s = pyro.sample("s", dist.Bernoulli(0.5))
            z = pyro.sample("z", dist.Normal(2.0 * s - 1.0, 1.0))
            pyro.sample("x", dist.Normal(z, 0.5), obs=x)

    def guide(x):
        a, m = pyro.param("a", torch.tensor(0.7)), pyro.param("m", torch.tensor(0.4))
        with poutine.scale(scale=c), pyro.plate("data", len(x), subsample_size=size) as i:
            x = x[i]
            s = pyro.sample("s", dist.Bernoulli(logits=a * x))
            pyro.sample("z", dist.Normal(m * x + 0.3 * (2.0 * s - 1.0), 0.6))
    return Case("mixed", model, guide, (x,))


def _exact_mixed(case, c: float) -> dict[str, torch.Tensor]:
    """The closed-form ELBO (Gaussian expectations given s), times c, differentiated."""
    x = case.args[0]
    a, m = torch.tensor(0.7, requires_grad=True), torch.tensor(0.4, requires_grad=True)
    total = torch.zeros(())
    for s in (0.0, 1.0):
        q_s = dist.Bernoulli(logits=a * x)
        prob = q_s.log_prob(torch.tensor(s)).exp()
        mu, sd = m * x + 0.3 * (2 * s - 1), 0.6
        # E_q[log N(z; 2s-1, 1)] + E_q[log N(x; z, 0.5)] - E_q[log q(z)]
        e_prior = -0.5 * math.log(2 * math.pi) - 0.5 * ((mu - (2 * s - 1)) ** 2 + sd ** 2)
        e_lik = -0.5 * math.log(2 * math.pi * 0.25) - 0.5 * ((x - mu) ** 2 + sd ** 2) / 0.25
        entropy = 0.5 * math.log(2 * math.pi * math.e * sd ** 2)
        elbo = dist.Bernoulli(0.5).log_prob(torch.tensor(s)) - q_s.log_prob(torch.tensor(s)) \
            + e_prior + e_lik + entropy
        total = total + (prob * elbo).sum()
    ga, gm = torch.autograd.grad(c * total, [a, m])
    return {"a": ga, "m": gm}


@pytest.mark.parametrize("c, subsample", [(0.5, False), (2.0, False), (1.0, True)],
                         ids=["scale-0.5", "scale-2", "subsample"])
@pytest.mark.parametrize("name", ["reinforce-none", "nvil", "iwae-1"])
def test_score_term_is_scaled_once_on_a_mixed_model(c, subsample, name):
    case = _mixed_case(c, subsample)
    exact = _exact_mixed(case, c)
    make = ESTIMATORS[name][0]
    pyro.set_rng_seed(4)
    mc_grads(case, make, 3)
    assert_unbiased(mc_grads(case, make, 200), exact)


# ---------------------------------------------------------------------- guide factors everywhere


def _factor_pair(prior_mean: float = 2.0):
    x = torch.tensor([0.5, -0.3, 1.2])

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(prior_mean, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        c = pyro.param("c", torch.tensor(0.3))  # used by the factor only
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.5 * x, 0.8))
            pyro.factor("f", c * z, has_rsample=True)
    return model, guide, x


@pytest.mark.parametrize("make", [lambda: IWAE(1), lambda: STL(), lambda: Reinforce(),
                                  lambda: NVIL(), lambda: IWAE(2), lambda: VIMCO(2),
                                  lambda: RWS(2, phi="wake")],
                         ids=["iwae-1", "stl", "reinforce", "nvil", "iwae-2", "vimco-2", "rws-wake"])
def test_guide_factor_counts_in_loss_and_gradient(make):
    """The factor c * z is part of log q, in value and gradient: the loss's gradient for c,
    which only the factor uses, is sum_b z_b at k=1 (Trace_ELBO's), sum_i w_i z_i for the
    importance-weighted bounds, and RWS's wake update raises log q at the weighted particles:
    -sum_i w_i z_i."""
    model, guide, x = _factor_pair()
    objective = make()
    k = objective.num_particles
    pyro.clear_param_store()
    pyro.set_rng_seed(5)
    loss = objective.loss_and_grads(model, guide, x)
    grad = pyro.param("c").unconstrained().grad
    pyro.set_rng_seed(5)
    w = objective._weights(model, guide, (x,), {}, detach_samples=isinstance(objective, (Reinforce, RWS)))
    z = w.guide_trace.nodes["z"]["value"]
    weights = torch.softmax(w.log_w.detach(), 0) if k > 1 else torch.ones(1, len(x))
    sign = -1.0 if isinstance(objective, RWS) else 1.0
    assert grad.item() == pytest.approx(sign * (weights * z.reshape(k, -1)).sum().item(), rel=1e-5)
    if k == 1:
        pyro.clear_param_store()
        pyro.set_rng_seed(5)
        assert loss == pytest.approx(Trace_ELBO().loss(model, guide, x), rel=1e-6)


def test_sleep_phase_counts_the_guide_factor():
    """d/dc of the sleep objective log q(z | x) at dreams z ~ p(z) = N(2, 1): E = 2 per datapoint."""
    model, guide, x = _factor_pair(prior_mean=2.0)
    objective = WakeSleep()
    pyro.set_rng_seed(6)
    draws = []
    for _ in range(400):
        pyro.clear_param_store()
        objective.loss_and_grads(model, guide, x)
        draws.append(-pyro.param("c").unconstrained().grad)
    d = torch.stack(draws)
    assert abs(d.mean() - 2.0 * len(x)) < 4 * d.std() / math.sqrt(len(d))


# ---------------------------------------------------------------------- data without args[0]


def _keyword_pair():
    seen = []

    def model(x=None):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True) * torch.ones(3), 1.0).to_event(1),
                        obs=x)

    def guide(x=None):
        seen.append(x)
        a = pyro.param("a", torch.tensor(0.2))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(a * x[..., :2], 1.0).to_event(1))
    return model, guide, seen


def test_nvil_baseline_reads_the_observed_sites_when_data_is_a_keyword():
    model, guide, _ = _keyword_pair()
    x = torch.randn(5, 3)
    pyro.clear_param_store()
    nvil = NVIL()
    SVI(model, guide, pyro.optim.Adam({"lr": 1e-3}), nvil).step(x=x)
    assert nvil.baseline_net[0].in_features == 3  # one row of x per datapoint


def test_nvil_baseline_input_callable():
    model, guide, _ = _keyword_pair()
    x = torch.randn(5, 3)
    pyro.clear_param_store()
    nvil = NVIL(baseline_input=lambda x=None: x[:, :1])
    SVI(model, guide, pyro.optim.Adam({"lr": 1e-3}), nvil).step(x=x)
    assert nvil.baseline_net[0].in_features == 1
    bad = NVIL(baseline_input=lambda x=None: x[:2])
    with pytest.raises(ValueError, match=r"baseline_input must give a tensor with one row per unit "
                                         r"\(5: the datapoints"):
        bad.loss_and_grads(model, guide, x=x)
    with pytest.raises(ValueError, match="baseline_input must be a callable"):
        NVIL(baseline_input=3)


def test_nvil_without_observed_sites_learns_a_constant_baseline():
    case = by_name("no_observations")
    pyro.clear_param_store()
    nvil = NVIL()
    run(case, nvil)
    assert nvil.baseline_net[0].in_features == 1


def test_sleep_phase_dreams_the_keyword_data():
    model, guide, seen = _keyword_pair()
    x = torch.randn(5, 3)
    pyro.clear_param_store()
    WakeSleep().loss_and_grads(model, guide, x=x)
    wake, sleep = seen[0], seen[-1]
    assert wake is x and sleep.shape == x.shape and not torch.equal(sleep, x)


def test_sleep_phase_dreams_subsampled_and_sequential_data():
    for name in ("subsampled_local_latents", "sequential_plate"):
        case = by_name(name)
        pyro.set_rng_seed(0)
        assert math.isfinite(run(case, WakeSleep()))


def test_mcem_keys_chains_by_the_observed_data():
    case = by_name("convention_vae_like")
    mcem = MCEM(num_steps=1, num_leapfrog=2)
    run(case, mcem, steps=1)
    assert len(mcem.chains) == case.args[0].shape[0]


# ---------------------------------------------------------------------- options and plates


ALL = [IWAE, STL, Reinforce, NVIL, VIMCO, RWS, WakeSleep, MCEM, MCMCRefinedELBO]


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_pyro_constructor_options_are_accepted(cls):
    k = {} if cls in (MCEM, MCMCRefinedELBO) else {"num_particles": 2 if cls in (VIMCO, RWS) else 1}
    obj = cls(**k, max_plate_nesting=float("inf"), vectorize_particles=False,
              strict_enumeration_warning=False, ignore_jit_warnings=True, jit_options={"check_trace": False},
              retain_graph=True, data_plate="data")
    assert obj.vectorize_particles is False and obj.retain_graph is True
    assert obj.strict_enumeration_warning is False and obj.ignore_jit_warnings is True


@pytest.mark.parametrize("kwargs, message", [
    ({"vectorize_particles": "yes"}, "vectorize_particles must be True, False or None"),
    ({"max_plate_nesting": -1}, "max_plate_nesting an integer >= 0 or inf"),
    ({"data_plate": 3}, "data_plate must be a plate's name"),
])
def test_bad_options_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        IWAE(2, **kwargs)


def test_retain_graph_keeps_the_graph():
    """Pyro's meaning: the autograd graph outlives the step, so a graph shared with the
    model can be differentiated again."""
    def step(retain):
        w = torch.tensor(0.5, requires_grad=True)
        shared = w * 2.0

        def model():
            pyro.sample("x", dist.Normal(shared, 1.0), obs=torch.tensor(0.3))

        def guide():
            pass
        IWAE(2, retain_graph=retain).loss_and_grads(model, guide)
        shared.backward()
    step(True)
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        step(False)


def test_default_nesting_is_guessed_and_does_not_hang():
    case = by_name("nested_latent_inner_plate")
    for obj in (IWAE(3), IWAE(3, max_plate_nesting=float("inf")), VIMCO(3), RWS(3)):
        pyro.set_rng_seed(0)
        assert math.isfinite(run(case, obj))


def test_guessing_the_nesting_leaves_the_random_state_alone():
    case = by_name("hierarchical_global_local")
    losses = []
    for nesting in (1, float("inf")):
        pyro.clear_param_store()
        pyro.set_rng_seed(7)
        losses.append(IWAE(3, max_plate_nesting=nesting).loss(case.model, case.guide, *case.args))
    assert losses[0] == losses[1]


def test_too_small_nesting_names_the_particle_plate():
    case = by_name("nested_data_features")
    with pytest.raises(ValueError, match=r"plate at dim -2, where the objective's particle plate sits "
                                         r"\(max_plate_nesting=1\)"):
        IWAE(3, max_plate_nesting=1, vectorize_particles=True).loss(case.model, case.guide, *case.args)


def test_vectorization_falls_back_to_one_particle_at_a_time(caplog):
    case = by_name("dynamic_control_flow")
    obj = IWAE(3)
    with caplog.at_level("WARNING"):
        run(case, obj, steps=3)
    lines = [r for r in caplog.records if "one at a time" in r.getMessage()]
    assert len(lines) == 1  # once per model/guide pair
    with pytest.raises(RuntimeError, match="Boolean value of Tensor with more than one value"):
        run(case, IWAE(3, vectorize_particles=True))
    pyro.set_rng_seed(0)
    assert math.isfinite(run(case, IWAE(3, vectorize_particles=False)))


def test_sequential_particles_give_the_same_bound_as_vectorized_ones():
    """The same estimator either way: equal means over many draws."""
    case = by_name("hierarchical_global_local")
    means = []
    for vec in (True, False):
        pyro.set_rng_seed(8)
        draws = torch.tensor([IWAE(3, vectorize_particles=vec).loss(case.model, case.guide, *case.args)
                              for _ in range(600)])
        means.append((draws.mean(), draws.var() / len(draws)))
    (a, va), (b, vb) = means
    assert abs(a - b) < 4 * math.sqrt(va + vb)


def test_data_plate_by_name_and_its_errors():
    case = by_name("nonnested_plates")
    w = IWAE(1, data_plate="b_plate")._weights(case.model, case.guide, case.args, {})
    assert w.layout.frame.name == "b_plate" and w.units == len(case.args[1])
    with pytest.raises(ValueError, match=r"data_plate='nope': the model has no plate called 'nope'; its "
                                         r"vectorized plates: \['a_plate', 'b_plate'\]"):
        IWAE(1, data_plate="nope").loss(case.model, case.guide, *case.args)
    seq = by_name("sequential_plate")
    with pytest.raises(ValueError, match=r"data_plate='data' is a sequential plate"):
        IWAE(1, data_plate="data").loss(seq.model, seq.guide, *seq.args)


def test_units_follow_the_data_plate_and_global_sites():
    def units(name, k):
        case = by_name(name)
        pyro.clear_param_store()
        return IWAE(k)._weights(case.model, case.guide, case.args, case.kwargs).log_w.shape

    assert units("plate_named_obs", 3) == (3, 6)           # per datapoint, any plate name
    assert units("nested_data_features", 3) == (3, 4)      # the outermost plate of the data
    assert units("hierarchical_global_local", 3) == (3, 1)  # a global latent: one joint unit
    assert units("hierarchical_global_local", 1) == (1, 6)  # one particle: still per datapoint
    assert units("no_observations", 3) == (3, 1)
    assert units("sequential_plate", 3) == (3, 1)          # no vectorized plate


def test_gradient_snr_and_evaluation_with_global_sites():
    from torch.utils.data import TensorDataset

    from pyro_deepgen.diagnostics import gradient_snr
    from pyro_deepgen.evaluate import ais_log_likelihood, log_likelihood
    case = by_name("hierarchical_global_local")
    pyro.clear_param_store()
    stats = gradient_snr(case.model, case.guide, IWAE(3), case.args, num_draws=5)
    assert math.isfinite(stats.summary()["snr"])
    with pytest.raises(ValueError, match=r"needs every sample site under the data plate 'data', but "
                                         r"\['mu'\] are outside it"):
        log_likelihood(case.model, case.guide, TensorDataset(case.args[0]), num_samples=3)
    with pytest.raises(ValueError, match=r"AIS chains move each datapoint's latents .* site 'mu' is in "
                                         r"the plates \[\]"):
        ais_log_likelihood(case.model, case.guide, case.args[0], num_chains=2, num_steps=2)


def test_error_messages_name_the_site():
    for case_name, make, pattern in [
        ("bernoulli_global", lambda: STL(), r"\['z'\] cannot be reparameterized"),
        ("hierarchical_global_local", lambda: MCMCRefinedELBO(), r"site 'z' by HMC, one vector per "
                                                                 r"datapoint"),
        ("beta_bernoulli", lambda: MCEM(), r"latent site site='z', which the model lacks"),
    ]:
        case = by_name(case_name)
        with pytest.raises(ValueError, match=pattern):
            run(case, make())
        assert re.search(r"'\w+'", pattern)
