import itertools
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import RenyiELBO, SVI, Trace_ELBO, TraceMeanField_ELBO

from linear_gaussian import LinearGaussian
from pyro_deepgen.infer import IWAE, make_objective, objective_names, register_objective

W = torch.tensor([1.0, -2.0, 0.5])
PRIOR = torch.tensor([0.3, -0.4, 0.2])


def discrete_model(x):
    with pyro.plate("data", x.shape[0], dim=-1):
        z = pyro.sample("z", dist.Bernoulli(logits=PRIOR).to_event(1))
        pyro.sample("x", dist.Normal(z @ W, 1.0), obs=x)


def discrete_guide(x):
    phi = pyro.param("phi", torch.tensor([0.1, 0.5, -0.3]))
    with pyro.plate("data", x.shape[0], dim=-1):
        pyro.sample("z", dist.Bernoulli(logits=phi.expand(x.shape[0], 3)).to_event(1))


def exact_iwae_grad(x0: float, k: int) -> torch.Tensor:
    """d/dphi of E[log mean_i w_i] by enumerating all k-tuples of the 8 states."""
    phi = torch.tensor([0.1, 0.5, -0.3], requires_grad=True)
    states = torch.tensor(list(itertools.product([0.0, 1.0], repeat=3)))
    q = dist.Bernoulli(logits=phi).to_event(1)
    log_q = q.log_prob(states)
    log_w = (dist.Bernoulli(logits=PRIOR).to_event(1).log_prob(states)
             + dist.Normal(states @ W, 1.0).log_prob(torch.tensor(x0)) - log_q)
    idx = torch.tensor(list(itertools.product(range(8), repeat=k)))  # (8**k, k)
    prob = log_q[idx].sum(-1).exp()
    total = (prob * (torch.logsumexp(log_w[idx], -1) - math.log(k))).sum()
    (g,) = torch.autograd.grad(total, phi)
    return g


@pytest.mark.parametrize("k", [1, 2, 3])
def test_iwae_discrete_gradient_is_unbiased(k):
    exact = exact_iwae_grad(0.7, k)
    x = torch.full((4000,), 0.7)
    grads = []
    loss = IWAE(num_particles=k)
    for _ in range(40):
        pyro.clear_param_store()
        surrogate = loss.differentiable_loss(discrete_model, discrete_guide, x)
        (g,) = torch.autograd.grad(-surrogate / x.shape[0], pyro.param("phi").unconstrained())
        grads.append(g)
    g = torch.stack(grads)
    mean, se = g.mean(0), g.std(0) / math.sqrt(g.shape[0])
    assert (exact.abs() > 1e-3).all()
    assert ((mean - exact).abs() < 4 * se).all(), (mean, exact, se)


def test_pyro_renyi_alpha0_misses_the_discrete_gradient():
    """The reason IWAE exists here: Pyro's RenyiELBO(alpha=0) gives these sites 0."""
    x = torch.full((100,), 0.7)
    pyro.clear_param_store()
    renyi = RenyiELBO(alpha=0, num_particles=2, vectorize_particles=True, max_plate_nesting=1)
    renyi.loss_and_grads(discrete_model, discrete_guide, x)
    assert torch.equal(pyro.param("phi").unconstrained().grad, torch.zeros(3))
    assert (exact_iwae_grad(0.7, 2).abs() > 1e-3).all()


def test_iwae_matches_closed_form_on_linear_gaussian():
    lg = LinearGaussian()
    x = lg.sample_x(64)
    # the guide is the exact posterior: every bound equals log p(x) for any k
    loss = IWAE(num_particles=7).loss(lg.model, lg.guide, x)
    assert abs(loss + lg.exact_log_px(x).sum().item()) < 1e-8


def test_iwae_trains_with_svi_and_k1_equals_elbo_gradient():
    lg = LinearGaussian().shift_guide(c=0.5)
    x = lg.sample_x(32)
    pyro.set_rng_seed(5)
    a = IWAE(num_particles=1).differentiable_loss(lg.model, lg.guide, x)
    ga = torch.autograd.grad(a, [lg.c, lg.W])
    pyro.set_rng_seed(5)
    b = Trace_ELBO(num_particles=1, vectorize_particles=True, max_plate_nesting=1) \
        .differentiable_loss(lg.model, lg.guide, x)
    gb = torch.autograd.grad(b, [lg.c, lg.W])
    for u, v in zip(ga, gb):
        torch.testing.assert_close(u, v)
    svi = SVI(lg.model, lg.guide, pyro.optim.Adam({"lr": 1e-2}), IWAE(num_particles=5))
    assert math.isfinite(svi.step(x))


def test_registry_names_and_errors():
    assert isinstance(make_objective("elbo"), Trace_ELBO)
    assert isinstance(make_objective("meanfield"), TraceMeanField_ELBO)
    iw = make_objective("iwae-50")
    assert isinstance(iw, IWAE) and iw.num_particles == 50
    assert set(objective_names()) >= {"elbo", "meanfield", "iwae-K", "iwae-dreg-K", "stl", "reinforce",
                                      "nvil", "vimco-K", "wake-sleep", "rws-K"}
    from pyro_deepgen.infer import NVIL, RWS, STL, VIMCO, WakeSleep
    dreg = make_objective("iwae-dreg-50")
    assert isinstance(dreg, IWAE) and dreg.gradient == "dreg" and dreg.num_particles == 50
    assert isinstance(make_objective("stl"), STL)
    assert make_objective("reinforce").baseline == "average"
    assert isinstance(make_objective("nvil"), NVIL)
    assert make_objective("vimco-5").num_particles == 5 and isinstance(make_objective("vimco-5"), VIMCO)
    assert isinstance(make_objective("wake-sleep"), WakeSleep)
    assert isinstance(make_objective("rws-5"), RWS) and make_objective("rws-5").num_particles == 5
    with pytest.raises(ValueError, match=r"VIMCO needs num_particles >= 2"):
        make_objective("vimco-1")
    with pytest.raises(ValueError, match=r"unknown objective 'elbow'; valid: .*elbo.*iwae-K.*meanfield"):
        make_objective("elbow")
    with pytest.raises(ValueError, match=r"'iwae' needs a particle count, e.g. iwae-5"):
        make_objective("iwae")
    with pytest.raises(ValueError, match="IWAE needs an integer num_particles >= 1; got 0"):
        make_objective("iwae-0")
    with pytest.raises(ValueError, match="lower-case words"):
        register_objective("Bad Name", Trace_ELBO)
