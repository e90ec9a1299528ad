"""KL warm-up, beta and free bits against closed-form and enumerated gradients."""

import itertools
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from test_objectives import (PHI0, PRIOR, W, _lg, assert_unbiased, discrete_guide, discrete_model,
                             mc_grads)
from pyro_deepgen.infer import IWAE, NVIL, STL, VIMCO, KLSchedule, Reinforce, make_objective, with_kl
from pyro_deepgen.train import fit


def exact_grads(lg, x, c, free_bits=0.0):
    """d/d params of E_q[log p(x|z)] - sum_j c_j KL_j (closed form), where c_j = c,
    or 0 (with the constant c * free_bits) for units whose mean KL is below free_bits."""
    W_, b, A, cc, s = lg.W, lg.b, lg.A, lg.c, lg.log_s.exp()
    m, var, s2 = x @ A.T + cc, s**2, lg.sigma**2
    r = x - m @ W_.T - b
    e_log_lik = (-0.5 * (r**2).sum(-1) - 0.5 * (W_**2 * var).sum()) / s2 \
        - 0.5 * lg.x_dim * math.log(2 * math.pi * s2)
    kl_units = 0.5 * (var + m**2 - 1 - torch.log(var))          # (n, z)
    coef = torch.full((lg.z_dim,), c, dtype=x.dtype)
    if free_bits:
        coef = torch.where(kl_units.detach().mean(0) < free_bits, torch.zeros_like(coef), coef)
    obj = (e_log_lik - (coef * kl_units).sum(-1)).sum()
    params = [lg.W, lg.b, lg.A, lg.c, lg.log_s]
    return dict(zip(["W", "b", "A", "c", "log_s"], torch.autograd.grad(obj, params))), kl_units.mean(0)


def at_step(objective, step):
    """``objective`` held at schedule step ``step`` (its training calls do not advance it)."""
    objective.kl_step = step
    objective._count_step = lambda: None
    return objective


@pytest.mark.parametrize("make", [
    lambda s: with_kl(Trace_ELBO(), s),
    lambda s: with_kl(TraceMeanField_ELBO(), s),
    lambda s: with_kl(STL(), s),
    lambda s: with_kl(Reinforce(baseline="none"), s),
    lambda s: with_kl(NVIL(normalize=False), s),
], ids=["elbo", "meanfield", "stl", "reinforce", "nvil"])
def test_warm_up_factor_zero_leaves_the_likelihood_gradient_alone(make):
    lg = _lg()
    x = lg.sample_x(1).expand(500, 3)
    loss = at_step(make(KLSchedule(warmup=100)), 0)
    exact, _ = exact_grads(lg, x, 0.0)
    draws = mc_grads(loss, lg, x, reps=60)
    assert_unbiased(draws, exact)


@pytest.mark.parametrize("make", [
    lambda s: with_kl(Trace_ELBO(), s),
    lambda s: with_kl(TraceMeanField_ELBO(), s),
    lambda s: with_kl(STL(num_particles=2), s),
    lambda s: with_kl(Reinforce(baseline="none"), s),
], ids=["elbo", "meanfield", "stl", "reinforce"])
def test_mid_warm_up_and_beta_scale_only_the_kl(make):
    lg = _lg()
    x = lg.sample_x(1).expand(500, 3)
    schedule = KLSchedule(beta=2.0, warmup=8)
    loss = at_step(make(schedule), 3)
    exact, _ = exact_grads(lg, x, schedule.factor(3))
    assert schedule.factor(3) == pytest.approx(0.75)
    assert_unbiased(mc_grads(loss, lg, x, reps=60), exact)


def test_free_bits_zero_the_kl_gradient_of_units_below_the_threshold():
    lg = _lg()
    x = lg.sample_x(1).expand(500, 3)
    _, kl = exact_grads(lg, x, 1.0)
    lo, hi = sorted(kl.tolist())
    assert hi - lo > 0.1, "the two units need distinct KLs for this test"
    lam = (lo + hi) / 2
    for make in (lambda s: with_kl(Trace_ELBO(), s), lambda s: with_kl(STL(), s)):
        loss = make(KLSchedule(free_bits=lam))
        exact, _ = exact_grads(lg, x, 1.0, free_bits=lam)
        draws = mc_grads(loss, lg, x, reps=40)
        assert_unbiased(draws, exact)
        # the unit above keeps its full ELBO gradient: compare with the plain ELBO's
        plain, _ = exact_grads(lg, x, 1.0)
        above = int(kl.argmax())
        assert torch.allclose(exact["log_s"][above], plain["log_s"][above])
        assert not torch.allclose(exact["log_s"][1 - above], plain["log_s"][1 - above])


def test_free_bits_value_is_the_clamped_objective():
    lg = _lg()
    x = lg.sample_x(3)
    _, kl = exact_grads(lg, x, 1.0)
    lam = float(kl.detach().max()) + 1.0  # every unit below: each datapoint's KL is the constant 2 * lam
    values = []
    for schedule in (KLSchedule(free_bits=lam), KLSchedule(beta=0.0)):
        pyro.set_rng_seed(0)  # the same draws of z: the likelihood terms agree exactly
        values.append(-with_kl(Trace_ELBO(), schedule).loss(lg.model, lg.guide, x))
    assert values[0] == pytest.approx(values[1] - 3 * 2 * lam, abs=1e-9)


def test_dreg_with_beta_agrees_with_standard_iwae_gradient():
    lg = _lg(shift=0.8)
    x = lg.sample_x(1).expand(400, 3)
    s = KLSchedule(beta=0.5)
    std = mc_grads(with_kl(IWAE(5), s), lg, x, reps=60)
    dreg = mc_grads(with_kl(IWAE(5, gradient="dreg"), s), lg, x, reps=60)
    for name in std:
        a, b = std[name], dreg[name]
        se = (a.var(0) / a.shape[0] + b.var(0) / b.shape[0]).sqrt()
        assert ((a.mean(0) - b.mean(0)).abs() <= 4 * se + 1e-9).all(), name


# ---------------------------------------------------------------- discrete latents

STATES = torch.tensor(list(itertools.product([0.0, 1.0], repeat=3)))


def exact_tempered_grad(x0, k, c):
    """d/dphi of E[log mean_i w_i^c] over all k-tuples, log w^c = log p(x|z) + c log p(z)/q(z)."""
    phi = PHI0.clone().requires_grad_()
    log_q = dist.Bernoulli(logits=phi).to_event(1).log_prob(STATES)
    log_w = (c * (dist.Bernoulli(logits=PRIOR).to_event(1).log_prob(STATES) - log_q)
             + dist.Normal(STATES @ W, 1.0).log_prob(torch.tensor(x0)))
    idx = torch.tensor(list(itertools.product(range(8), repeat=k)))
    total = (log_q[idx].sum(-1).exp() * (torch.logsumexp(log_w[idx], -1) - math.log(k))).sum()
    return torch.autograd.grad(total, phi)[0]


@pytest.mark.parametrize("make, k", [
    (lambda: Reinforce(baseline="average"), 1),
    (lambda: NVIL(normalize=False), 1),
    (lambda: VIMCO(3), 3),
    (lambda: IWAE(2), 2),
], ids=["reinforce", "nvil", "vimco-3", "iwae-2"])
def test_discrete_estimators_with_a_kl_factor_match_enumeration(make, k):
    n, reps = 3000, 40
    loss = with_kl(make(), KLSchedule(beta=0.4))
    x = torch.full((n,), 0.7)
    out = []
    for _ in range(reps + 3):
        pyro.clear_param_store()
        loss.loss_and_grads(discrete_model, discrete_guide, x)
        out.append(-pyro.param("phi").unconstrained().grad / n)
    g = torch.stack(out[3:])  # the first draws warm up running baselines
    exact = exact_tempered_grad(0.7, k, 0.4)
    assert not torch.allclose(exact, exact_tempered_grad(0.7, k, 1.0), atol=1e-2)
    mean, se = g.mean(0), g.std(0) / math.sqrt(reps)
    assert ((mean - exact).abs() < 4 * se).all(), (mean, exact, se)


# ---------------------------------------------------------------- schedule and trainer


def test_schedule_shapes():
    lin, sig = KLSchedule(warmup=10), KLSchedule(warmup=10, shape="sigmoid", beta=0.5)
    assert [lin.factor(s) for s in (0, 5, 10, 50)] == [0.0, 0.5, 1.0, 1.0]
    assert sig.factor(0) == pytest.approx(0.0) and sig.factor(5) == pytest.approx(0.25)
    assert sig.factor(10) == 0.5
    assert all(sig.factor(s) <= sig.factor(s + 1) for s in range(12))
    assert KLSchedule().is_identity and with_kl(Trace_ELBO(), KLSchedule()).__class__ is Trace_ELBO


@pytest.mark.parametrize("kwargs, message", [
    ({"beta": -0.5}, "beta must be a finite number >= 0; got -0.5"),
    ({"free_bits": -1.0}, "free bits must be a finite number of nats >= 0; got -1.0"),
    ({"warmup": -3}, "the KL warm-up must be an integer number of steps >= 0; got -3"),
    ({"warmup": 2.5}, "the KL warm-up must be an integer number of steps >= 0; got 2.5"),
    ({"shape": "cosine"}, "unknown warm-up shape 'cosine'; valid: linear, sigmoid"),
])
def test_bad_schedules(kwargs, message):
    with pytest.raises(ValueError) as e:
        KLSchedule(**kwargs)
    assert str(e.value) == message


def test_bad_combinations():
    with pytest.raises(ValueError, match="free bits with DReG gradients is not supported"):
        make_objective("iwae-dreg-5", KLSchedule(free_bits=0.5))
    with pytest.raises(ValueError, match="Trace_ELBO\\(num_particles > 1\\) is not supported"):
        with_kl(Trace_ELBO(num_particles=3), KLSchedule(beta=0.5))


def test_warm_up_must_fit_in_the_run_and_is_recorded(tmp_path):
    from torch.utils.data import TensorDataset
    from pyro_deepgen.models import VAE

    x = torch.bernoulli(torch.full((40, 12), 0.5))
    vae = VAE(12, z_dim=2, hidden=(8,))
    with pytest.raises(ValueError) as e:
        fit(vae.model, vae.guide, TensorDataset(x), make_objective("elbo", KLSchedule(warmup=11)),
            epochs=2, batch_size=8, progress=False)
    assert str(e.value) == ("the KL warm-up of 11 steps does not fit in the run: 2 epochs of 5 steps "
                            "make 10 steps")
    pyro.clear_param_store()
    loss = make_objective("elbo", KLSchedule(warmup=10))
    history = fit(vae.model, vae.guide, TensorDataset(x), loss, epochs=3, batch_size=8,
                  progress=False, out=tmp_path)
    assert [r["kl_weight"] for r in history] == [0.4, 0.9, 1.0]
    # a resumed run continues the schedule where it stopped
    pyro.clear_param_store()
    loss2 = make_objective("elbo", KLSchedule(warmup=10))
    fit(vae.model, vae.guide, TensorDataset(x), loss2, epochs=3, batch_size=8, progress=False,
        out=tmp_path)
    assert loss2.kl_step == 15
